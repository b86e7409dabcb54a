//! The replication protocol (issue 18, in progress): `Lsn` against the server's `pg_lsn`.

mod common;

use pqlib::replication::Lsn;

#[test]
fn lsn_matches_the_servers_pg_lsn() {
    let mut conn = pqlib::Connection::connect(&common::conninfo()).unwrap();
    let row = conn
        .query_one(
            "SELECT pg_current_wal_lsn(), pg_current_wal_lsn()::text, $1::pg_lsn + 4096, \
             $1::pg_lsn::text",
            &[&"16/B374D848".parse::<Lsn>().unwrap()],
        )
        .unwrap();
    let current: Lsn = row.get(0);
    assert_eq!(current.to_string(), row.get::<_, &str>(1));
    assert!(!current.is_invalid());
    assert_eq!(row.get::<_, Lsn>(2), "16/B374E848".parse().unwrap());
    assert_eq!(row.get::<_, &str>(3), "16/B374D848");
    // The server's text form parses back to the same value, for many positions.
    for offset in [0u64, 1, 0xFFFF_FFFF, 1 << 32, 0x16_B374_D848, u64::MAX] {
        let text: String = conn
            .query_one("SELECT $1::pg_lsn::text", &[&Lsn::new(offset)])
            .unwrap()
            .get(0);
        assert_eq!(text.parse::<Lsn>().unwrap(), Lsn::new(offset), "{text}");
    }
    // A wrong type is a conversion error, not a panic.
    let error = conn
        .query_one("SELECT 1::int8", &[])
        .unwrap()
        .try_get::<_, Lsn>(0)
        .unwrap_err();
    assert_eq!(error.kind(), pqlib::error::ErrorKind::Conversion, "{error}");
}
