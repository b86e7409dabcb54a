// libpq may call the notice handler from whichever thread uses the connection: it must be Send.
use std::rc::Rc;

fn main() {
    let mut conn = pqlib::Connection::connect("").unwrap();
    let count = Rc::new(std::cell::Cell::new(0));
    conn.set_notice_handler(move |_| count.set(count.get() + 1));
}
