// A `LargeObject` borrows its transaction mutably: the descriptor, which the server closes when
// the transaction ends, cannot be used after the transaction commits.
use std::io::Write;

fn main() {
    let mut conn = pqlib::Connection::connect("").unwrap();
    let mut tx = conn.transaction().unwrap();
    let oid = tx.large_object_create().unwrap();
    let mut lo = tx
        .large_object_open(oid, pqlib::LargeObjectMode::Write)
        .unwrap();
    tx.commit().unwrap();
    lo.write_all(b"too late").unwrap();
}
