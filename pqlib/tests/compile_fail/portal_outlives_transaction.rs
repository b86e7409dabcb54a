// A portal cannot be used in a later transaction of its connection: it keeps the
// transaction's borrow of the connection alive, so no new transaction can start.
fn main() -> Result<(), pqlib::Error> {
    let mut conn = pqlib::Connection::connect("")?;
    let mut tx = conn.transaction()?;
    let portal = tx.bind("SELECT 1", &[])?;
    tx.commit()?;
    let mut next = conn.transaction()?;
    next.query_portal(&portal, 1)?;
    Ok(())
}
