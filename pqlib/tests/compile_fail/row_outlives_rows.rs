// A `Row` borrows its `Rows`: the result cannot be freed while a row is in use.
fn main() {
    let mut conn = pqlib::Connection::connect("").unwrap();
    let rows = conn.query("SELECT 1::int4", &[]).unwrap();
    let row = rows.get(0).unwrap();
    drop(rows);
    let _n: i32 = row.get(0);
}
