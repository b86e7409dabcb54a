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

/// A cluster that allows logical decoding (its own: `wal_level = logical` needs a restart).
fn logical_cluster() -> pqlib::tempdb::TempCluster {
    pqlib::tempdb::TempCluster::builder()
        .config("wal_level = logical")
        .start()
        .expect("a throwaway server with wal_level = logical")
}

#[test]
fn replication_commands_on_logical_and_physical_connections() {
    use pqlib::replication::{ReplicationConnection, ReplicationMode, SlotKind, SnapshotAction};
    let cluster = logical_cluster();
    let config: pqlib::Config = cluster.conninfo().parse().unwrap();

    let mut logical = ReplicationConnection::connect(&config, ReplicationMode::Logical).unwrap();
    let system = logical.identify_system().unwrap();
    assert_eq!(system.timeline, 1);
    assert!(!system.wal_position.is_invalid());
    assert_eq!(system.database.as_deref(), Some("postgres"));
    assert!(
        system.system_id.parse::<u64>().is_ok(),
        "{}",
        system.system_id
    );

    let kind = SlotKind::Logical {
        plugin: "test_decoding".into(),
        snapshot: SnapshotAction::Export,
    };
    let created = logical
        .create_replication_slot("pqlib_logical", &kind, false)
        .unwrap();
    assert_eq!(created.slot_name, "pqlib_logical");
    assert_eq!(created.output_plugin.as_deref(), Some("test_decoding"));
    assert!(created.snapshot_name.is_some());
    let point = created.consistent_point.unwrap();
    assert!(point >= system.wal_position);
    // SQL works on a logical replication connection.
    let rows = logical
        .simple_query(
            "SELECT slot_type FROM pg_replication_slots WHERE slot_name = 'pqlib_logical'",
        )
        .unwrap();
    assert!(
        rows.iter()
            .any(|m| matches!(m, pqlib::SimpleQueryMessage::Row(r) if r.get(0) == Some("logical")))
    );
    let duplicate = logical
        .create_replication_slot("pqlib_logical", &kind, false)
        .unwrap_err();
    assert_eq!(
        duplicate.code(),
        Some(&pqlib::error::SqlState::DUPLICATE_OBJECT),
        "{duplicate}"
    );
    let bad_name = logical
        .create_replication_slot("Bad-Name", &kind, false)
        .unwrap_err();
    assert_eq!(bad_name.kind(), pqlib::error::ErrorKind::BadInput);

    let mut physical = ReplicationConnection::connect(&config, ReplicationMode::Physical).unwrap();
    assert_eq!(physical.identify_system().unwrap().database, None);
    let slot = physical
        .create_replication_slot(
            "pqlib_physical",
            &SlotKind::Physical { reserve_wal: true },
            true,
        )
        .unwrap();
    assert_eq!(
        slot.consistent_point, None,
        "physical slots have no consistent point"
    );
    if physical.server_version() >= 150000 {
        let position = physical
            .read_replication_slot("pqlib_physical")
            .unwrap()
            .unwrap();
        assert_eq!(position.slot_type, "physical");
        assert!(position.restart_lsn.is_some());
        assert_eq!(physical.read_replication_slot("pqlib_none").unwrap(), None);
    } else {
        let error = physical
            .read_replication_slot("pqlib_physical")
            .unwrap_err();
        assert_eq!(error.kind(), pqlib::error::ErrorKind::Unsupported);
    }
    physical
        .drop_replication_slot("pqlib_physical", false)
        .unwrap();
    // Timeline 1 has no history file.
    assert!(physical.timeline_history(1).is_err());
    // SQL is refused on a physical connection (an error, which would also drop a temporary
    // slot); the connection stays usable.
    assert!(physical.simple_query("SELECT 1").is_err());
    assert_eq!(physical.identify_system().unwrap().timeline, 1);

    logical
        .drop_replication_slot("pqlib_logical", true)
        .unwrap();
    let mut direct = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    let left: i64 = direct
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
