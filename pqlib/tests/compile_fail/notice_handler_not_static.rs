// Results keep the notice handler alive after the connection is gone: it must be 'static.
fn main() {
    let mut conn = pqlib::Connection::connect("").unwrap();
    let prefix = String::from("notice");
    let prefix = &prefix;
    conn.set_notice_handler(move |n| println!("{prefix}: {}", n.message()));
}
