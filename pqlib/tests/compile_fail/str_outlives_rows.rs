// A `&str` borrowed from a row points into the result: it cannot outlive the `Rows`.
fn main() {
    let mut conn = pqlib::Connection::connect("").unwrap();
    let name: &str = {
        let rows = conn.query("SELECT 'x'::text", &[]).unwrap();
        rows.get(0).unwrap().get(0)
    };
    println!("{name}");
}
