//! Regression tests for protocol-state bugs (issue 13): each request gets exactly its own
//! answer, or the connection is closed with an error. The generated matrix and the
//! model-based test (protocol_matrix.rs, protocol_model.rs) cover the space; these pin the
//! cases that were found by review.

#![cfg(unix)]

mod common;

use std::time::Duration;

use pqlib::error::ErrorKind;
use pqlib::{Connection, TransactionStatus};

const LIMIT: Duration = Duration::from_secs(60);

fn connect() -> Connection {
    Connection::connect(&common::conninfo()).expect("connecting")
}

/// `SELECT 'secret of …'` from four concurrent callers: each must get its own row.
async fn four_callers_get_their_own_rows(client: &pqlib::tokio::Client) {
    let names = ["alice", "bob", "carol", "dave"];
    let answers = futures_util::future::join_all(names.iter().map(|name| async move {
        let secret = format!("secret of {name}");
        let row = client
            .query_one("SELECT $1::text", &[&secret])
            .await
            .unwrap_or_else(|e| panic!("{name}'s query failed: {e}"));
        (secret, row.get::<_, String>(0))
    }))
    .await;
    for (asked, got) in answers {
        assert_eq!(got, asked, "a caller received another caller's row");
    }
}

const COPY_STATEMENTS: [&str; 2] = ["COPY (SELECT 1) TO STDOUT", "COPY copy_target FROM STDIN"];

#[tokio::test]
async fn async_copy_statement_through_query_apis_is_refused_and_answers_stay_in_step() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = common::connect_async().await;
    client
        .batch_execute("CREATE TEMP TABLE copy_target (x int)")
        .await
        .unwrap();
    for sql in COPY_STATEMENTS {
        let statement = client
            .prepare(sql)
            .await
            .expect("preparing a COPY is harmless");
        let outcomes = [
            ("query", client.query(&statement, &[]).await.err()),
            ("execute", client.execute(&statement, &[]).await.err()),
            ("query sql", client.query(sql, &[]).await.err()),
            ("query_typed", client.query_typed(sql, &[]).await.err()),
            (
                "query_raw",
                client.query_raw(&statement, Vec::<i32>::new()).await.err(),
            ),
            (
                "pipeline",
                client.pipeline().query(&statement, &[]).await.err(),
            ),
        ];
        for (api, error) in outcomes {
            let error = error.unwrap_or_else(|| panic!("{api} ran {sql:?}"));
            assert_eq!(error.kind(), ErrorKind::BadInput, "{api} {sql:?}: {error}");
            assert!(error.to_string().contains("copy_"), "{error}");
        }
        four_callers_get_their_own_rows(&client).await;
    }
}

#[tokio::test]
async fn async_batch_execute_with_two_copies_ends_both_and_stays_in_step() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = common::connect_async().await;
    client
        .batch_execute("CREATE TEMP TABLE copy_target (x int)")
        .await
        .unwrap();
    for sql in [
        "COPY (SELECT 1) TO STDOUT; COPY (SELECT 2) TO STDOUT",
        "COPY (SELECT 1) TO STDOUT; COPY copy_target FROM STDIN",
        "COPY copy_target FROM STDIN; COPY (SELECT 2) TO STDOUT",
        "SELECT 1; COPY (SELECT 1) TO STDOUT; SELECT 2; COPY (SELECT 2) TO STDOUT; SELECT 3",
    ] {
        let outcome = tokio::time::timeout(LIMIT, client.batch_execute(sql))
            .await
            .unwrap_or_else(|_| panic!("batch_execute({sql:?}) hung"));
        let error = outcome.expect_err("COPY through batch_execute is an error");
        assert_eq!(error.kind(), ErrorKind::BadInput, "{sql}: {error}");
        four_callers_get_their_own_rows(&client).await;
    }
    // copy_out whose text holds a second COPY: the first one's data, then an error, and
    // the connection answers in step.
    let stream = client
        .copy_out("COPY (SELECT 7) TO STDOUT; COPY (SELECT 8) TO STDOUT")
        .await
        .unwrap();
    let items: Vec<_> =
        tokio::time::timeout(LIMIT, futures_util::StreamExt::collect::<Vec<_>>(stream))
            .await
            .expect("the copy_out stream hung");
    assert_eq!(items[0].as_ref().unwrap().as_ref(), b"7\n");
    assert!(
        items.last().unwrap().is_err(),
        "the second COPY is reported"
    );
    // copy_in whose text holds a second COPY.
    let mut sink = client
        .copy_in("COPY copy_target FROM STDIN; COPY (SELECT 9) TO STDOUT")
        .await
        .unwrap();
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"1\n"))
        .await
        .unwrap();
    let finished = tokio::time::timeout(LIMIT, sink.finish())
        .await
        .expect("finishing the copy_in hung");
    assert_eq!(finished.unwrap_err().kind(), ErrorKind::BadInput);
    four_callers_get_their_own_rows(&client).await;
}

#[test]
fn blocking_batch_execute_with_many_copies_ends_every_one() {
    common::bounded("batch_execute with COPYs", LIMIT, || {
        let mut conn = connect();
        conn.batch_execute("CREATE TEMP TABLE copy_target (x int)")
            .unwrap();
        let five: Vec<_> = (1..=5)
            .map(|i| format!("COPY (SELECT {i}) TO STDOUT"))
            .collect();
        for sql in [
            "COPY (SELECT 1) TO STDOUT; COPY (SELECT 2) TO STDOUT".to_owned(),
            "COPY copy_target FROM STDIN; COPY (SELECT 2) TO STDOUT".to_owned(),
            "COPY (SELECT 1) TO STDOUT; COPY copy_target FROM STDIN".to_owned(),
            five.join("; "),
        ] {
            let error = conn
                .batch_execute(&sql)
                .expect_err("COPY through batch_execute");
            assert_eq!(error.kind(), ErrorKind::BadInput, "{sql}: {error}");
            let tag: String = conn.query_one("SELECT 'mine'::text", &[]).unwrap().get(0);
            assert_eq!(tag, "mine");
        }
        let mut out = String::new();
        let read = std::io::Read::read_to_string(
            &mut conn
                .copy_out("COPY (SELECT 1) TO STDOUT; COPY (SELECT 2) TO STDOUT")
                .unwrap(),
            &mut out,
        );
        assert!(read.is_err(), "the second COPY is reported");
        assert_eq!(out, "1\n");
        let tag: String = conn.query_one("SELECT 'after'::text", &[]).unwrap().get(0);
        assert_eq!(tag, "after");
    });
}

#[test]
fn blocking_pipeline_refuses_copy_and_keeps_its_results_in_order() {
    common::bounded("a pipeline with COPY", LIMIT, || {
        let mut conn = connect();
        conn.batch_execute("CREATE TEMP TABLE copy_target (x int)")
            .unwrap();
        let copy_out = conn.prepare(COPY_STATEMENTS[0]).unwrap();
        let mut pipeline = conn.pipeline().unwrap();
        pipeline.query("SELECT 'first'::text", &[]).unwrap();
        for sql in COPY_STATEMENTS {
            let error = pipeline
                .query(sql, &[])
                .expect_err("COPY text in a pipeline");
            assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
            let error = pipeline.query_typed(sql, &[]).expect_err("COPY text");
            assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
        }
        let error = pipeline
            .query(&copy_out, &[])
            .expect_err("a COPY statement");
        assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
        pipeline.query("SELECT 'second'::text", &[]).unwrap();
        pipeline.sync().unwrap();
        let mut tags = Vec::new();
        while let Some(result) = pipeline.next_result() {
            if let Some(rows) = result.unwrap().into_rows() {
                tags.push(rows.get(0).unwrap().get::<_, String>(0));
            }
        }
        assert_eq!(tags, ["first", "second"]);
        pipeline.finish().unwrap();
        let tag: String = conn.query_one("SELECT 'after'::text", &[]).unwrap().get(0);
        assert_eq!(tag, "after");
    });
}

#[test]
fn blocking_query_of_a_copy_statement_is_refused_before_sending() {
    let mut conn = connect();
    conn.batch_execute("CREATE TEMP TABLE copy_target (x int)")
        .unwrap();
    for sql in COPY_STATEMENTS {
        for error in [
            conn.query(sql, &[]).unwrap_err(),
            conn.execute(sql, &[]).unwrap_err(),
            conn.query_typed(sql, &[]).unwrap_err(),
        ] {
            assert_eq!(error.kind(), ErrorKind::BadInput, "{error}");
        }
        assert_eq!(conn.transaction_status(), TransactionStatus::Idle);
        let tag: String = conn.query_one("SELECT 'mine'::text", &[]).unwrap().get(0);
        assert_eq!(tag, "mine");
    }
}

#[test]
fn a_leaked_pipeline_closes_the_connection_instead_of_leaking_its_results() {
    let mut conn = connect();
    let mut pipeline = conn.pipeline().unwrap();
    pipeline.query("SELECT 'old'::text", &[]).unwrap();
    pipeline.sync().unwrap();
    std::mem::forget(pipeline);
    let error = conn
        .pipeline()
        .expect_err("a second pipeline over a leaked one");
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
    assert!(conn.is_closed());
    let error = conn.query("SELECT 'new'::text", &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
    conn.reset().unwrap();
    let tag: String = conn.query_one("SELECT 'new'::text", &[]).unwrap().get(0);
    assert_eq!(tag, "new");
}

#[test]
fn leaked_copy_and_row_stream_guards_close_the_connection() {
    type Leak = fn(&mut Connection);
    let leaks: [(&str, Leak); 3] = [
        ("copy_out", |conn| {
            std::mem::forget(conn.copy_out("COPY (SELECT 'old') TO STDOUT").unwrap());
        }),
        ("copy_in", |conn| {
            conn.batch_execute("CREATE TEMP TABLE IF NOT EXISTS t (x text)")
                .unwrap();
            std::mem::forget(conn.copy_in("COPY t FROM STDIN").unwrap());
        }),
        ("query_raw", |conn| {
            let rows = conn
                .query_raw(
                    "SELECT 'old'::text FROM generate_series(1, 100000)",
                    Vec::<i32>::new(),
                )
                .unwrap();
            std::mem::forget(rows);
        }),
    ];
    for (what, leak) in leaks {
        let mut conn = connect();
        leak(&mut conn);
        match conn.query_one("SELECT 'new'::text", &[]) {
            Ok(row) => assert_eq!(row.get::<_, String>(0), "new", "after a leaked {what}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Closed, "after a leaked {what}: {e}");
                assert!(conn.is_closed());
            }
        }
    }
}

/// A `CopyInSink` chunk larger than libpq's `int` length: sent whole, in pieces.
#[tokio::test]
async fn async_copy_in_chunk_over_2_gib_is_sent_whole() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = common::connect_async().await;
    client
        .batch_execute("CREATE TEMP TABLE big (line text)")
        .await
        .unwrap();
    // 2 GiB + of 1 MiB lines, then a marker; only the marker passes the WHERE, so the server
    // parses everything but stores one row.
    let line = format!("{}\n", "x".repeat((1 << 20) - 1));
    let lines = (i32::MAX as usize) / line.len() + 2;
    let mut data = Vec::with_capacity(lines * line.len() + 8);
    for _ in 0..lines {
        data.extend_from_slice(line.as_bytes());
    }
    data.extend_from_slice(b"marker\n");
    assert!(data.len() > i32::MAX as usize);
    let mut sink = client
        .copy_in("COPY big FROM STDIN WHERE line = 'marker'")
        .await
        .unwrap();
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from(data))
        .await
        .unwrap();
    let rows = tokio::time::timeout(Duration::from_secs(300), sink.finish())
        .await
        .expect("the 2 GiB chunk hung the driver")
        .unwrap();
    assert_eq!(rows, 1);
    let count: i64 = client
        .query_one("SELECT count(*) FROM big WHERE line = 'marker'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

/// A server that answers a statement with a COPY nobody asked for (the protocol allows it
/// only for COPY statements, which pqlib refuses before sending): the client must close the
/// connection, never match the COPY's aftermath to later requests.
mod rogue_server {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread;

    use super::*;

    /// What the server sends when it sees the first Execute.
    #[derive(Clone, Copy, Debug)]
    enum Rogue {
        CopyOut,
        CopyIn,
        /// Answers every `loread` with more bytes than it asked for.
        LongLargeObjectRead,
    }

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn read_message(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).ok()?;
        let len = i32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).ok()?;
        Some((header[0], body))
    }

    /// Reads the startup packet and says hello: trust authentication, UTF8, idle.
    fn handshake(stream: &mut TcpStream) -> bool {
        // The startup packet (no type byte).
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return false;
        }
        let mut startup = vec![0u8; i32::from_be_bytes(len) as usize - 4];
        if stream.read_exact(&mut startup).is_err() {
            return false;
        }
        let mut hello = message(b'R', &0i32.to_be_bytes());
        for (name, value) in [
            ("server_version", "15.0"),
            ("client_encoding", "UTF8"),
            ("standard_conforming_strings", "on"),
            ("integer_datetimes", "on"),
        ] {
            hello.extend(message(b'S', format!("{name}\0{value}\0").as_bytes()));
        }
        hello.extend(message(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
        hello.extend(message(b'Z', b"I"));
        stream.write_all(&hello).is_ok()
    }

    fn serve(mut stream: TcpStream, rogue: Rogue) {
        if !handshake(&mut stream) {
            return;
        }
        if let Rogue::LongLargeObjectRead = rogue {
            return serve_large_objects(stream);
        }
        let mut executed = false;
        while let Some((kind, body)) = read_message(&mut stream) {
            let reply = match kind {
                b'P' => message(b'1', b""),
                b'B' => message(b'2', b""),
                b'D' if body.first() == Some(&b'S') => {
                    let mut out = message(b't', &0i16.to_be_bytes());
                    out.extend(message(b'n', b""));
                    out
                }
                b'D' => message(b'n', b""),
                b'E' if !executed => {
                    executed = true;
                    match rogue {
                        Rogue::CopyOut => {
                            let mut out = message(b'H', &[0, 0, 0]);
                            out.extend(message(b'd', b"stolen\n"));
                            out.extend(message(b'c', b""));
                            out.extend(message(b'C', b"COPY 1\0"));
                            out
                        }
                        Rogue::CopyIn => message(b'G', &[0, 0, 0]),
                        Rogue::LongLargeObjectRead => unreachable!(),
                    }
                }
                b'E' => message(b'C', b"SELECT 0\0"),
                b'S' => message(b'Z', b"I"),
                b'Q' => {
                    let mut out = message(b'I', b"");
                    out.extend(message(b'Z', b"I"));
                    out
                }
                b'X' => return,
                _ => Vec::new(),
            };
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
    }

    /// A `RowDescription` of one binary column of type `oid`.
    fn one_column(oid: u32) -> Vec<u8> {
        let mut body = 1i16.to_be_bytes().to_vec();
        body.extend_from_slice(b"v\0");
        body.extend_from_slice(&0u32.to_be_bytes()); // table
        body.extend_from_slice(&0i16.to_be_bytes()); // column
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes()); // typlen
        body.extend_from_slice(&(-1i32).to_be_bytes()); // typmod
        body.extend_from_slice(&1i16.to_be_bytes()); // binary
        message(b'T', &body)
    }

    fn one_value(value: &[u8]) -> Vec<u8> {
        let mut body = 1i16.to_be_bytes().to_vec();
        body.extend_from_slice(&(value.len() as i32).to_be_bytes());
        body.extend_from_slice(value);
        message(b'D', &body)
    }

    /// Just enough of a server for `Transaction::large_object_open` and a read: `lo_open`
    /// answers descriptor 0, and `loread($1, $2)` answers 1000 bytes whatever `$2` asked for.
    fn serve_large_objects(mut stream: TcpStream) {
        let mut statements = std::collections::HashMap::<Vec<u8>, String>::new();
        let mut bound = String::new();
        let mut status = b'I';
        let nul = |bytes: &[u8]| bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        while let Some((kind, body)) = read_message(&mut stream) {
            let (oid, value): (u32, Vec<u8>) = if bound.contains("loread") {
                (17, vec![b'x'; 1000])
            } else {
                (23, 0i32.to_be_bytes().to_vec())
            };
            let reply = match kind {
                b'P' => {
                    let name = body[..nul(&body)].to_vec();
                    let rest = &body[name.len() + 1..];
                    let sql = String::from_utf8_lossy(&rest[..nul(rest)]).into_owned();
                    statements.insert(name, sql);
                    message(b'1', b"")
                }
                b'B' => {
                    let rest = &body[nul(&body) + 1..];
                    bound = statements
                        .get(&rest[..nul(rest)])
                        .cloned()
                        .unwrap_or_default();
                    message(b'2', b"")
                }
                b'D' if body.first() == Some(&b'S') => {
                    let sql = statements.get(&body[1..nul(&body[1..]) + 1]).cloned();
                    let sql = sql.unwrap_or_default();
                    let params = if sql.contains("$2") { 2i16 } else { 0 };
                    let mut description = params.to_be_bytes().to_vec();
                    for _ in 0..params {
                        description.extend_from_slice(&23u32.to_be_bytes());
                    }
                    let mut out = message(b't', &description);
                    out.extend(one_column(if sql.contains("loread") { 17 } else { 23 }));
                    out
                }
                b'D' => one_column(oid),
                b'E' => {
                    let mut out = one_value(&value);
                    out.extend(message(b'C', b"SELECT 1\0"));
                    out
                }
                b'S' => message(b'Z', &[status]),
                b'Q' => {
                    let sql = String::from_utf8_lossy(&body).to_uppercase();
                    let tag: &[u8] = if sql.starts_with("BEGIN") {
                        status = b'T';
                        b"BEGIN\0"
                    } else {
                        status = b'I';
                        b"ROLLBACK\0"
                    };
                    let mut out = message(b'C', tag);
                    out.extend(message(b'Z', &[status]));
                    out
                }
                b'X' => return,
                _ => Vec::new(),
            };
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
    }

    /// A large-object read is bounded by the caller's buffer, whatever the server answers
    /// (issue 13, finding 8: libpq's `lo_read` copied the server's length into it).
    #[test]
    fn large_object_read_refuses_an_answer_longer_than_asked() {
        let conninfo = start(Rogue::LongLargeObjectRead);
        common::bounded(
            "a large-object read from a rogue server",
            LIMIT,
            move || {
                let mut conn = Connection::connect(&conninfo).unwrap();
                let mut transaction = conn.transaction().unwrap();
                let mut object = transaction
                    .large_object_open(4242, pqlib::large_object::LargeObjectMode::Read)
                    .unwrap();
                let mut buf = [0u8; 16];
                let error = std::io::Read::read(&mut object, &mut buf).unwrap_err();
                assert!(
                    error.to_string().contains("with 1000 bytes"),
                    "an over-long answer must be refused: {error}"
                );
                assert_eq!(buf, [0u8; 16], "nothing was copied");
            },
        );
    }

    /// A one-connection rogue server on 127.0.0.1; returns its conninfo.
    fn start(rogue: Rogue) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                serve(stream, rogue);
            }
        });
        format!(
            "host=127.0.0.1 port={port} user=rogue dbname=rogue sslmode=disable \
             gssencmode=disable connect_timeout=10"
        )
    }

    #[tokio::test]
    async fn async_client_closes_on_a_copy_it_did_not_ask_for() {
        let _deadline = common::deadline(common::TEST_DEADLINE);
        for rogue in [Rogue::CopyOut, Rogue::CopyIn] {
            let (client, connection) = pqlib::tokio::connect(&start(rogue)).await.unwrap();
            let driver = tokio::spawn(connection);
            let requests = (0..4).map(|i| {
                let client = &client;
                async move { client.query_typed(&format!("SELECT {i}"), &[]).await }
            });
            let answers = tokio::time::timeout(LIMIT, futures_util::future::join_all(requests))
                .await
                .unwrap_or_else(|_| panic!("{rogue:?}: the client hung"));
            for answer in answers {
                let error = answer.expect_err("no request may succeed after a rogue COPY");
                assert_eq!(error.kind(), ErrorKind::Closed, "{rogue:?}: {error}");
            }
            let after = client.query_typed("SELECT 9", &[]).await.unwrap_err();
            assert_eq!(after.kind(), ErrorKind::Closed, "{rogue:?}: {after}");
            let ended = tokio::time::timeout(LIMIT, driver).await.unwrap().unwrap();
            assert!(
                ended.is_err(),
                "{rogue:?}: the connection task reports the failure"
            );
        }
    }

    #[test]
    fn blocking_pipeline_closes_on_a_copy_it_did_not_ask_for() {
        for rogue in [Rogue::CopyOut, Rogue::CopyIn] {
            let conninfo = start(rogue);
            common::bounded("a pipeline against a rogue server", LIMIT, move || {
                let mut conn = Connection::connect(&conninfo).unwrap();
                let mut pipeline = conn.pipeline().unwrap();
                pipeline.query_typed("SELECT 1", &[]).unwrap();
                pipeline.query_typed("SELECT 2", &[]).unwrap();
                pipeline.sync().unwrap();
                let first = pipeline.next_result().expect("a result").unwrap_err();
                assert_eq!(first.kind(), ErrorKind::Closed, "{rogue:?}: {first}");
                while let Some(result) = pipeline.next_result() {
                    assert!(result.is_err(), "{rogue:?}: a result after the rogue COPY");
                }
                drop(pipeline);
                assert!(conn.is_closed(), "{rogue:?}");
                let error = conn.query_typed("SELECT 3", &[]).unwrap_err();
                assert_eq!(error.kind(), ErrorKind::Closed, "{rogue:?}: {error}");
            });
        }
    }
}

/// `PGCLIENTENCODING=LATIN1` in the environment: both clients still speak UTF-8 (text would
/// be corrupted both ways otherwise), and a `SET client_encoding` later closes the session.
#[test]
fn client_encoding_stays_utf8_whatever_the_environment() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    const FLAG: &str = "PQLIB_CHILD_CLIENT_ENCODING";
    if std::env::var_os(FLAG).is_some() {
        let conninfo = std::env::var("CHILD_CONNINFO").unwrap();
        let mut conn = Connection::connect(&conninfo).unwrap();
        assert_eq!(conn.client_encoding(), "UTF8");
        let row = conn
            .query_one("SELECT $1::text = chr(233), chr(233)", &[&"é"])
            .unwrap();
        assert!(row.get::<_, bool>(0));
        assert_eq!(row.get::<_, &str>(1), "é");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = pqlib::tokio::connect(&conninfo).await.unwrap();
            tokio::spawn(connection);
            let row = client
                .query_one("SELECT $1::text = chr(233), chr(233)", &[&"é"])
                .await
                .unwrap();
            assert!(row.get::<_, bool>(0));
            assert_eq!(row.get::<_, String>(1), "é");
            let set = client
                .batch_execute("SET client_encoding TO 'LATIN1'")
                .await;
            assert_eq!(set.unwrap_err().kind(), ErrorKind::Closed);
            let after = client.query_one("SELECT 1", &[]).await.unwrap_err();
            assert_eq!(after.kind(), ErrorKind::Closed);
        });
        let set = conn.execute("SET client_encoding TO 'LATIN1'", &[]);
        assert_eq!(set.unwrap_err().kind(), ErrorKind::Closed);
        assert!(conn.is_closed());
        println!("CHILD OK");
        return;
    }
    let (ok, output) = common::run_child_test(
        "client_encoding_stays_utf8_whatever_the_environment",
        FLAG,
        &[
            ("PGCLIENTENCODING", "LATIN1".to_owned()),
            ("CHILD_CONNINFO", common::conninfo()),
        ],
    );
    assert!(ok, "{output}");
}

/// Waits (bounded) until backend `pid` has left the COPY: a cancel ended it.
fn wait_until_idle(observer: &mut Connection, pid: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let idle: bool = observer
            .query_one(
                "SELECT state = 'idle' FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .unwrap()
            .get(0);
        if idle {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cancel did not end the COPY"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A cancel that ends a COPY IN while the client is still sending: the COPY fails with the
/// cancel's error, and the connection goes on.
#[tokio::test]
async fn async_copy_in_cancelled_by_the_server_fails_alone() {
    let _deadline = common::deadline(common::TEST_DEADLINE);
    let client = common::connect_async().await;
    client
        .batch_execute("CREATE TEMP TABLE copy_target (x int)")
        .await
        .unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let mut sink = client.copy_in("COPY copy_target FROM STDIN").await.unwrap();
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"1\n"))
        .await
        .unwrap();
    // A backend waiting for COPY data acts on the cancel when the next data arrives.
    client.cancel_token().cancel_query().await.unwrap();
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"2\n"))
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || wait_until_idle(&mut connect(), pid))
        .await
        .unwrap();
    // The driver meets the server's error while sending these.
    for _ in 0..3 {
        let _ = futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"2\n")).await;
    }
    let finished = tokio::time::timeout(LIMIT, sink.finish()).await.unwrap();
    let error = finished.unwrap_err();
    assert_eq!(
        error.code(),
        Some(&pqlib::error::SqlState::QUERY_CANCELED),
        "{error}"
    );
    four_callers_get_their_own_rows(&client).await;
}

#[test]
fn blocking_copy_in_cancelled_by_the_server_fails_alone() {
    common::bounded("a cancelled copy_in", LIMIT, || {
        let mut conn = connect();
        conn.batch_execute("CREATE TEMP TABLE copy_target (x int)")
            .unwrap();
        let pid = conn.backend_pid() as i32;
        let token = conn.cancel_token();
        let mut writer = conn.copy_in("COPY copy_target FROM STDIN").unwrap();
        std::io::Write::write_all(&mut writer, b"1\n").unwrap();
        token.cancel_query().unwrap();
        // Acted on when the next data arrives.
        std::io::Write::write_all(&mut writer, b"2\n").unwrap();
        std::io::Write::flush(&mut writer).unwrap();
        wait_until_idle(&mut connect(), pid);
        for _ in 0..3 {
            let _ = std::io::Write::write_all(&mut writer, &[b'2'; 70_000]);
        }
        let error = writer.finish().unwrap_err();
        assert_eq!(
            error.code(),
            Some(&pqlib::error::SqlState::QUERY_CANCELED),
            "{error}"
        );
        let tag: String = conn.query_one("SELECT 'mine'::text", &[]).unwrap().get(0);
        assert_eq!(tag, "mine");
    });
}
