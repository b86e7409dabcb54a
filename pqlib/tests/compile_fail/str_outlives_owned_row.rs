// A `&str` from `query_one`'s row borrows that row: a temporary row cannot lend it.
fn main() {
    let mut conn = pqlib::Connection::connect("").unwrap();
    let name: &str = conn.query_one("SELECT 'x'::text", &[]).unwrap().get(0);
    println!("{name}");
}
