//! pqlib in one page: connect, create a table, insert with parameters, read typed rows, run a
//! transaction, and receive a notification.
//!
//! Uses `DATABASE_URL` when set (a conninfo string or `postgresql://` URI); otherwise starts
//! a throwaway server in a temp dir and stops it at the end.
//!
//! ```sh
//! cargo run --example quickstart
//! DATABASE_URL=postgresql://postgres@localhost/postgres cargo run --example quickstart
//! ```

use std::time::Duration;

use pqlib::tempdb::TempCluster;
use pqlib::{Connection, Error};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the throwaway server alive until the end of main.
    let (conninfo, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            println!("DATABASE_URL is not set: starting a throwaway server");
            let server = TempCluster::start()?;
            (server.conninfo(), Some(server))
        }
    };

    let mut conn = Connection::connect(&conninfo)?;
    println!(
        "connected: libpq {}, server {}, backend pid {}",
        pqlib::version(),
        conn.parameter_status("server_version").unwrap_or_default(),
        conn.backend_pid()
    );

    conn.batch_execute(
        "DROP TABLE IF EXISTS quickstart_people;
         CREATE TABLE quickstart_people (id int4 PRIMARY KEY, name text NOT NULL, score float8)",
    )?;

    // Parameters travel in binary; the statement is prepared once and cached.
    let people = [
        (1, "Ada", Some(9.5)),
        (2, "Grace", None),
        (3, "Edsger", Some(7.25)),
    ];
    for (id, name, score) in &people {
        conn.execute(
            "INSERT INTO quickstart_people (id, name, score) VALUES ($1, $2, $3)",
            &[id, name, score],
        )?;
    }
    println!("inserted {} people", people.len());

    // `&str` values borrow libpq's result: no copy, and they cannot outlive `rows`.
    let rows = conn.query(
        "SELECT id, name, score FROM quickstart_people ORDER BY id",
        &[],
    )?;
    for row in &rows {
        let id: i32 = row.get("id");
        let name: &str = row.get("name");
        let score: Option<f64> = row.get("score");
        println!("  {id}: {name:<8} score {score:?}");
    }

    // A transaction that is dropped without commit rolls back.
    {
        let mut tx = conn.transaction()?;
        tx.execute("DELETE FROM quickstart_people", &[])?;
        println!("inside the transaction: {} people", count(&mut tx)?);
    }
    let after: i64 = conn
        .query_one("SELECT count(*) FROM quickstart_people", &[])?
        .get(0);
    println!("after rolling it back: {after} people");

    // A unique violation is an error with a SQLSTATE, and the connection stays usable.
    let err = conn
        .execute(
            "INSERT INTO quickstart_people (id, name) VALUES (1, 'again')",
            &[],
        )
        .unwrap_err();
    println!("duplicate id: {err}");

    // LISTEN/NOTIFY.
    conn.batch_execute("LISTEN quickstart; NOTIFY quickstart, 'hello from pqlib'")?;
    let mut notifications = conn.notifications();
    if let Some(note) = notifications.timeout_iter(Duration::from_secs(5)).next() {
        let note = note?;
        println!("notification on {:?}: {:?}", note.channel(), note.payload());
    }

    conn.batch_execute("DROP TABLE quickstart_people")?;
    println!("done");
    Ok(())
}

fn count(tx: &mut pqlib::Transaction<'_>) -> Result<i64, Error> {
    Ok(tx
        .query_one("SELECT count(*) FROM quickstart_people", &[])?
        .get(0))
}
