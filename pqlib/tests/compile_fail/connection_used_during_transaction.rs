// A `Transaction` borrows the connection mutably: the connection cannot be used around it.
fn main() {
    let mut conn = pqlib::Connection::connect("").unwrap();
    let tx = conn.transaction().unwrap();
    conn.batch_execute("SELECT 1").unwrap();
    tx.commit().unwrap();
}
