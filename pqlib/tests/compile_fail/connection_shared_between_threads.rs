// `Connection` is not Sync: a `&Connection` cannot be used from two threads at once.
fn main() {
    let conn = pqlib::Connection::connect("").unwrap();
    std::thread::scope(|s| {
        s.spawn(|| conn.is_closed());
    });
}
