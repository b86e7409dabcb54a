//! The workloads W1–W9, each as one function that opens every client's connection (untimed)
//! and returns, per variant, one closure per client that runs the workload once.
//!
//! A closure gets `warm = true` for its warm-up run, where long workloads run a tenth of their
//! size. It returns a checksum that must be the same for every client.

use std::pin::pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{SinkExt, StreamExt, TryStreamExt};
use pqlib::types::Type;
use sqlx::{Connection as _, Row as _};
use tokio::runtime::Runtime;

use pqlib::replication::pgoutput::{Decoder, Message, PgOutputOptions};
use pqlib::replication::{
    Lsn, Received, ReplicationConnection, ReplicationMessage, ReplicationMode,
};
use pqlib::tokio::ReplicationClient;

use crate::c::{CConn, lib_version};
use crate::psycopg::Python;
use crate::{Client, Entry, Result, Sizes, Variant, Volume};

/// Seconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_UNIX: i64 = 946_684_800;
/// W4's timestamps: 2024-01-01 00:00:00 UTC plus i microseconds, in µs since 2000-01-01.
pub const BASE_US: i64 = 757_382_400 * 1_000_000;
/// Rows per sync point in W4's pipeline variant, and the concurrency of the async clients' W4
/// pipeline.
const PIPELINE_BATCH: usize = 1000;

const W1_SQL: &str = "SELECT $1::int4";
const W2_SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const W3_SQL: &str = "SELECT g, g::text, g::float8, now() FROM generate_series(1, $1) g";
const W4_SQL: &str = "INSERT INTO w4 (a, b, c, d) VALUES ($1, $2, $3, $4)";
const W4_COPY_TEXT: &str = "COPY w4 (a, b, c, d) FROM STDIN";
const W4_COPY_BINARY: &str = "COPY w4 (a, b, c, d) FROM STDIN (FORMAT binary)";
const W4_TRUNCATE: &str = "TRUNCATE w4";
const W5_SQL: &str = "COPY w5 TO STDOUT";
const W6_SQL: &str = "SELECT $1::int8";

const W4_TYPES: [Type; 4] = [Type::INT4, Type::TEXT, Type::FLOAT8, Type::TIMESTAMPTZ];

/// Everything a workload needs.
pub struct Ctx<'a> {
    pub conninfo: &'a str,
    pub sizes: Sizes,
    pub data: &'a Data,
    pub rt: &'a Runtime,
    /// The multi-thread runtime of the extra W1 and W7b rows, when they run.
    pub multi: Option<&'a Runtime>,
    pub python: Option<&'a Python>,
    /// Why W2 cannot run, if pgbench failed.
    pub pgbench_error: Option<String>,
    /// The connection string of the bench's PgBouncer (W8b, W8d), or why there is none.
    pub bouncer: std::result::Result<String, String>,
    /// The server's bin directory (W9's `pg_recvlogical`); `None` with `DATABASE_URL`
    /// (then `pg_recvlogical` from `PATH`).
    pub pg_bin: Option<std::path::PathBuf>,
}

type Build = for<'a> fn(&'a Ctx<'a>) -> Result<Vec<Variant<'a>>>;

pub const ALL: [(&str, Build); 9] = [
    ("W1", w1),
    ("W2", w2),
    ("W3", w3),
    ("W4", w4),
    ("W5", w5),
    ("W6", w6),
    ("W7", w7),
    ("W8", w8),
    ("W9", w9),
];

/// The data the workloads send, made once, outside any timing.
pub struct Data {
    /// W4's text column: `row-%016d`, 20 bytes for each row, back to back (for C).
    pub texts: Vec<u8>,
    /// The same values as `String`s (for the Rust clients).
    pub strings: Vec<String>,
    /// W4's rows as text COPY lines; row r ends at `copy_ends[r]`.
    pub copy_text: Vec<u8>,
    pub copy_ends: Vec<usize>,
    /// W2's account ids, from a fixed seed.
    pub aids: Vec<i32>,
}

impl Data {
    pub fn new(sizes: &Sizes) -> Data {
        let n = sizes.w4;
        let strings: Vec<String> = (0..n).map(|i| format!("row-{i:016}")).collect();
        let texts: Vec<u8> = strings.iter().flat_map(|s| s.bytes()).collect();
        let mut copy_text = Vec::with_capacity(n * 64);
        let mut copy_ends = Vec::with_capacity(n);
        for (i, s) in strings.iter().enumerate() {
            use std::io::Write;
            // c = i * 0.5 and d = 2024-01-01 + i µs, as the binary variants send them.
            let c = i as f64 * 0.5;
            writeln!(copy_text, "{i}\t{s}\t{c}\t2024-01-01 00:00:00.{i:06}+00").unwrap();
            copy_ends.push(copy_text.len());
        }
        let accounts = 100_000 * sizes.pgbench_scale as u64;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let aids = (0..sizes.w2)
            .map(|_| {
                // xorshift64*
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                (r % accounts + 1) as i32
            })
            .collect();
        Data {
            texts,
            strings,
            copy_text,
            copy_ends,
            aids,
        }
    }

    fn text(&self, i: usize) -> &str {
        &self.strings[i]
    }
}

/// W4's timestamp for row i.
fn ts(i: usize) -> SystemTime {
    UNIX_EPOCH
        + Duration::from_secs((PG_EPOCH_UNIX + BASE_US / 1_000_000) as u64)
        + Duration::from_micros(i as u64)
}

fn ts_chrono(i: usize) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros((PG_EPOCH_UNIX * 1_000_000) + BASE_US + i as i64)
        .expect("in range")
}

/// Creates the tables the workloads use: W4's target and W5's source.
pub fn prepare_tables(admin: &mut pqlib::Connection, sizes: &Sizes) -> Result<()> {
    admin.batch_execute(
        "DROP TABLE IF EXISTS w4, w5;
         CREATE UNLOGGED TABLE w4 (a int4, b text, c float8, d timestamptz);",
    )?;
    admin.batch_execute(&format!(
        "CREATE UNLOGGED TABLE w5 AS
           SELECT g AS id, md5(g::text) AS h1, md5((g + 1)::text) AS h2
           FROM generate_series(1, {}) g",
        sizes.w5_rows
    ))?;
    Ok(())
}

/// The size of a run: a tenth (at least 1) for the warm-up of long workloads.
fn size(n: usize, warm: bool) -> usize {
    if warm { (n / 10).max(1) } else { n }
}

fn c_conn(ctx: &Ctx<'_>) -> Result<CConn> {
    Ok(CConn::connect(ctx.conninfo)?)
}

fn pqlib_conn(ctx: &Ctx<'_>) -> Result<pqlib::Connection> {
    Ok(pqlib::Connection::connect(ctx.conninfo)?)
}

fn pqlib_async(ctx: &Ctx<'_>) -> Result<pqlib::tokio::Client> {
    pqlib_async_on(ctx, ctx.rt)
}

/// A `pqlib::tokio` client whose connection task runs on `rt`.
fn pqlib_async_on(ctx: &Ctx<'_>, rt: &Runtime) -> Result<pqlib::tokio::Client> {
    let (client, connection) = rt.block_on(pqlib::tokio::connect(ctx.conninfo))?;
    rt.spawn(connection);
    Ok(client)
}

fn postgres_conn(ctx: &Ctx<'_>) -> Result<postgres::Client> {
    Ok(postgres::Client::connect(ctx.conninfo, postgres::NoTls)?)
}

fn tokio_pg(ctx: &Ctx<'_>) -> Result<tokio_postgres::Client> {
    tokio_pg_on(ctx, ctx.rt)
}

/// A tokio-postgres client whose connection task runs on `rt`.
fn tokio_pg_on(ctx: &Ctx<'_>, rt: &Runtime) -> Result<tokio_postgres::Client> {
    let (client, connection) =
        rt.block_on(tokio_postgres::connect(ctx.conninfo, tokio_postgres::NoTls))?;
    rt.spawn(connection);
    Ok(client)
}

/// sqlx's options for the same server: the connection string parsed by tokio-postgres'
/// parser (which reads both key=value strings and URIs), since sqlx reads only URIs.
fn sqlx_options(conninfo: &str) -> Result<sqlx::postgres::PgConnectOptions> {
    let config: tokio_postgres::Config = conninfo.parse()?;
    let mut options = sqlx::postgres::PgConnectOptions::new_without_pgpass();
    match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(dir)) => options = options.socket(dir),
        Some(tokio_postgres::config::Host::Tcp(host)) => options = options.host(host),
        None => {}
    }
    if let Some(&port) = config.get_ports().first() {
        options = options.port(port);
    }
    if let Some(user) = config.get_user() {
        options = options.username(user);
    }
    if let Some(db) = config.get_dbname() {
        options = options.database(db);
    }
    if let Some(password) = config.get_password() {
        options = options.password(&String::from_utf8_lossy(password));
    }
    Ok(options)
}

fn sqlx_conn(ctx: &Ctx<'_>) -> Result<sqlx::PgConnection> {
    sqlx_conn_on(ctx, ctx.rt)
}

fn sqlx_conn_on(ctx: &Ctx<'_>, rt: &Runtime) -> Result<sqlx::PgConnection> {
    let options = sqlx_options(ctx.conninfo)?;
    Ok(rt.block_on(sqlx::PgConnection::connect_with(&options))?)
}

fn sqlx_pool(ctx: &Ctx<'_>, size: u32) -> Result<sqlx::PgPool> {
    sqlx_pool_on(ctx, ctx.rt, size)
}

fn sqlx_pool_on(ctx: &Ctx<'_>, rt: &Runtime, size: u32) -> Result<sqlx::PgPool> {
    let options = sqlx_options(ctx.conninfo)?;
    let pool = rt.block_on(
        sqlx::postgres::PgPoolOptions::new()
            .min_connections(size)
            .max_connections(size)
            .connect_with(options),
    )?;
    Ok(pool)
}

/// psycopg's entry for a workload its script knows, or why it cannot run.
fn psycopg_entry<'a>(
    ctx: &'a Ctx<'a>,
    variants: &mut Vec<(Client, String)>,
    entries: &mut Vec<Entry<'a>>,
    workload: &'static str,
    n: usize,
    how: &str,
) {
    match ctx.python {
        Some(python) => entries.push(Entry::timed(Client::Psycopg, how, move |warm| {
            python.run(ctx.conninfo, workload, size(n, warm), warm)
        })),
        None => variants.push((Client::Psycopg, "missing (no Python with psycopg)".into())),
    }
}

fn not_async(missing: &mut Vec<(Client, String)>) {
    missing.push((
        Client::PqlibSync,
        "blocking client: W7 is about async tasks".into(),
    ));
    missing.push((
        Client::Postgres,
        "blocking client: W7 is about async tasks".into(),
    ));
}

// ---------------------------------------------------------------------------------------------
// W1: `SELECT $1::int4` × n on one connection: the round-trip floor.

fn w1<'a>(ctx: &'a Ctx<'a>) -> Result<Vec<Variant<'a>>> {
    let n = ctx.sizes.w1;
    let mut entries = Vec::new();
    let mut missing = Vec::new();

    let mut c = c_conn(ctx)?;
    c.prepare("w1", W1_SQL, &[])?;
    entries.push(Entry::new(
        Client::C,
        "PQexecPrepared, binary",
        move |warm| Ok(c.w1(size(n, warm))?),
    ));

    let mut conn = pqlib_conn(ctx)?;
    let stmt = conn.prepare(W1_SQL)?;
    entries.push(Entry::new(
        Client::PqlibSync,
        "query_one(&Statement)",
        move |warm| {
            let mut sum = 0i64;
            for i in 1..=size(n, warm) as i32 {
                let v: i32 = conn.query_one(&stmt, &[&i])?.get(0);
                sum += i64::from(v);
            }
            Ok(sum)
        },
    ));

    let client = pqlib_async(ctx)?;
    let stmt = ctx.rt.block_on(client.prepare(W1_SQL))?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        "query_one(&Statement).await, sequential",
        move |warm| {
            ctx.rt.block_on(async {
                let mut sum = 0i64;
                for i in 1..=size(n, warm) as i32 {
                    let v: i32 = client.query_one(&stmt, &[&i]).await?.get(0);
                    sum += i64::from(v);
                }
                Ok(sum)
            })
        },
    ));

    let mut pg = postgres_conn(ctx)?;
    let stmt = pg.prepare(W1_SQL)?;
    entries.push(Entry::new(
        Client::Postgres,
        "query_one(&Statement)",
        move |warm| {
            let mut sum = 0i64;
            for i in 1..=size(n, warm) as i32 {
                let v: i32 = pg.query_one(&stmt, &[&i])?.get(0);
                sum += i64::from(v);
            }
            Ok(sum)
        },
    ));

    let tpg = tokio_pg(ctx)?;
    let stmt = ctx.rt.block_on(tpg.prepare(W1_SQL))?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        "query_one(&Statement).await",
        move |warm| {
            ctx.rt.block_on(async {
                let mut sum = 0i64;
                for i in 1..=size(n, warm) as i32 {
                    let v: i32 = tpg.query_one(&stmt, &[&i]).await?.get(0);
                    sum += i64::from(v);
                }
                Ok(sum)
            })
        },
    ));

    let mut sq = sqlx_conn(ctx)?;
    entries.push(Entry::new(
        Client::Sqlx,
        "query(..).bind(i).fetch_one",
        move |warm| {
            ctx.rt.block_on(async {
                let mut sum = 0i64;
                for i in 1..=size(n, warm) as i32 {
                    let row = sqlx::query(W1_SQL).bind(i).fetch_one(&mut sq).await?;
                    sum += i64::from(row.try_get::<i32, _>(0)?);
                }
                Ok(sum)
            })
        },
    ));

    if let Some(rt) = ctx.multi {
        w1_multi(ctx, rt, n, &mut entries)?;
    }

    psycopg_entry(
        ctx,
        &mut missing,
        &mut entries,
        "W1",
        n,
        "cursor.execute(prepare=True, binary=True) + fetchone",
    );

    Ok(vec![Variant {
        id: "W1",
        title: "SELECT $1::int4, one round trip each".into(),
        unit: format!("{n} round trips"),
        reset: None,
        volume: None,
        entries,
        missing,
    }])
}

// ---------------------------------------------------------------------------------------------
// W2: pgbench's point select, random aids.

fn w2<'a>(ctx: &'a Ctx<'a>) -> Result<Vec<Variant<'a>>> {
    let aids = &ctx.data.aids;
    let n = aids.len();
    let mut entries = Vec::new();
    let mut missing = Vec::new();
    if let Some(why) = &ctx.pgbench_error {
        return Err(format!("W2 needs pgbench -i: {why}").into());
    }
    let part = move |warm: bool| &aids[..size(n, warm)];

    let mut c = c_conn(ctx)?;
    c.prepare("w2", W2_SQL, &[pqlib_sys::Oid::from(23u32)])?;
    entries.push(Entry::new(
        Client::C,
        "PQexecPrepared, binary",
        move |warm| Ok(c.w2(part(warm))?),
    ));

    let mut conn = pqlib_conn(ctx)?;
    let stmt = conn.prepare(W2_SQL)?;
    entries.push(Entry::new(
        Client::PqlibSync,
        "query_one(&Statement)",
        move |warm| {
            let mut sum = 0i64;
            for aid in part(warm) {
                let v: i32 = conn.query_one(&stmt, &[aid])?.get(0);
                sum += 1 + i64::from(v);
            }
            Ok(sum)
        },
    ));

    let client = pqlib_async(ctx)?;
    let stmt = ctx.rt.block_on(client.prepare(W2_SQL))?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        "query_one(&Statement).await",
        move |warm| {
            ctx.rt.block_on(async {
                let mut sum = 0i64;
                for aid in part(warm) {
                    let v: i32 = client.query_one(&stmt, &[aid]).await?.get(0);
                    sum += 1 + i64::from(v);
                }
                Ok(sum)
            })
        },
    ));

    let mut pg = postgres_conn(ctx)?;
    let stmt = pg.prepare(W2_SQL)?;
    entries.push(Entry::new(
        Client::Postgres,
        "query_one(&Statement)",
        move |warm| {
            let mut sum = 0i64;
            for aid in part(warm) {
                let v: i32 = pg.query_one(&stmt, &[aid])?.get(0);
                sum += 1 + i64::from(v);
            }
            Ok(sum)
        },
    ));

    let tpg = tokio_pg(ctx)?;
    let stmt = ctx.rt.block_on(tpg.prepare(W2_SQL))?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        "query_one(&Statement).await",
        move |warm| {
            ctx.rt.block_on(async {
                let mut sum = 0i64;
                for aid in part(warm) {
                    let v: i32 = tpg.query_one(&stmt, &[aid]).await?.get(0);
                    sum += 1 + i64::from(v);
                }
                Ok(sum)
            })
        },
    ));

    let mut sq = sqlx_conn(ctx)?;
    entries.push(Entry::new(
        Client::Sqlx,
        "query(..).bind(aid).fetch_one",
        move |warm| {
            ctx.rt.block_on(async {
                let mut sum = 0i64;
                for &aid in part(warm) {
                    let row = sqlx::query(W2_SQL).bind(aid).fetch_one(&mut sq).await?;
                    sum += 1 + i64::from(row.try_get::<i32, _>(0)?);
                }
                Ok(sum)
            })
        },
    ));
    missing.push((
        Client::Psycopg,
        "not in psycopg's set (W1, W3, W4 COPY, W5, W6)".into(),
    ));

    Ok(vec![Variant {
        id: "W2",
        title: "pgbench point select (SELECT abalance … WHERE aid = $1)".into(),
        unit: format!("{n} queries, scale {}", ctx.sizes.pgbench_scale),
        reset: None,
        volume: None,
        entries,
        missing,
    }])
}

// ---------------------------------------------------------------------------------------------
// W3: decoding rows of (int4, text, float8, timestamptz).

/// The checksum of one W3 row: g + len(text) + trunc(float) + 1 for the timestamp.
fn w3_row(g: i32, text: &str, f: f64, _ts: SystemTime) -> i64 {
    i64::from(g) + text.len() as i64 + f as i64 + 1
}

fn w3<'a>(ctx: &'a Ctx<'a>) -> Result<Vec<Variant<'a>>> {
    let n = ctx.sizes.w3;
    let mut entries = Vec::new();
    let mut missing = Vec::new();
    let n32 = n as i32;

    let mut c = c_conn(ctx)?;
    c.prepare("w3", W3_SQL, &[])?;
    entries.push(Entry::new(
        Client::C,
        "PQexecPrepared, binary; PQgetvalue + ntohl/memcpy",
        move |_| Ok(c.w3(n)?),
    ));

    let mut conn = pqlib_conn(ctx)?;
    let stmt = conn.prepare(W3_SQL)?;
    entries.push(Entry::new(
        Client::PqlibSync,
        "query(); row.get::<i32/&str/f64/SystemTime>",
        move |_| {
            let rows = conn.query(&stmt, &[&n32])?;
            let mut sum = 0;
            for row in &rows {
                sum += w3_row(row.get(0), row.get(1), row.get(2), row.get(3));
            }
            Ok(sum)
        },
    ));

    let client = pqlib_async(ctx)?;
    let stmt = ctx.rt.block_on(client.prepare(W3_SQL))?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        "query().await; row.get",
        move |_| {
            let rows = ctx.rt.block_on(client.query(&stmt, &[&n32]))?;
            let mut sum = 0;
            for row in &rows {
                sum += w3_row(row.get(0), row.get(1), row.get(2), row.get(3));
            }
            Ok(sum)
        },
    ));

    let mut pg = postgres_conn(ctx)?;
    let stmt = pg.prepare(W3_SQL)?;
    entries.push(Entry::new(
        Client::Postgres,
        "query(); row.get",
        move |_| {
            let rows = pg.query(&stmt, &[&n32])?;
            let mut sum = 0;
            for row in &rows {
                sum += w3_row(row.get(0), row.get(1), row.get(2), row.get(3));
            }
            Ok(sum)
        },
    ));

    let tpg = tokio_pg(ctx)?;
    let stmt = ctx.rt.block_on(tpg.prepare(W3_SQL))?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        "query().await; row.get",
        move |_| {
            let rows = ctx.rt.block_on(tpg.query(&stmt, &[&n32]))?;
            let mut sum = 0;
            for row in &rows {
                sum += w3_row(row.get(0), row.get(1), row.get(2), row.get(3));
            }
            Ok(sum)
        },
    ));

    let mut sq = sqlx_conn(ctx)?;
    entries.push(Entry::new(
        Client::Sqlx,
        "query().fetch_all; try_get::<i32/&str/f64/DateTime<Utc>>",
        move |_| {
            ctx.rt.block_on(async {
                let rows = sqlx::query(W3_SQL).bind(n32).fetch_all(&mut sq).await?;
                let mut sum = 0;
                for row in &rows {
                    let _ts: chrono::DateTime<chrono::Utc> = row.try_get(3)?;
                    sum += w3_row(
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        UNIX_EPOCH,
                    );
                }
                Ok(sum)
            })
        },
    ));

    psycopg_entry(
        ctx,
        &mut missing,
        &mut entries,
        "W3",
        n,
        "execute(prepare=True, binary=True) + fetchall",
    );

    let mut variants = vec![Variant {
        id: "W3",
        title: "decode (int4, text, float8, timestamptz) rows".into(),
        unit: format!("{n} rows"),
        reset: None,
        volume: None,
        entries,
        missing,
    }];
    variants.push(w3_stream(ctx)?);
    Ok(variants)
}

fn w3_stream<'a>(ctx: &'a Ctx<'a>) -> Result<Variant<'a>> {
    let n = ctx.sizes.w3_stream;
    let mut entries = Vec::new();
    let mut missing = Vec::new();

    let mut c = c_conn(ctx)?;
    c.prepare("w3", W3_SQL, &[])?;
    let chunk = pqlib::STREAM_CHUNK_ROWS;
    let mode = if lib_version() >= 170000 {
        format!("PQsetChunkedRowsMode({chunk})")
    } else {
        "PQsetSingleRowMode".to_owned()
    };
    entries.push(Entry::new(
        Client::C,
        format!("PQsendQueryPrepared + {mode}"),
        move |warm| Ok(c.w3_stream(size(n, warm), chunk)?),
    ));

    let mut conn = pqlib_conn(ctx)?;
    let stmt = conn.prepare(W3_SQL)?;
    entries.push(Entry::new(
        Client::PqlibSync,
        "query_raw(); next_row()",
        move |warm| {
            let limit = size(n, warm) as i32;
            let mut stream = conn.query_raw(&stmt, [&limit])?;
            let mut sum = 0;
            while let Some(row) = stream.next_row() {
                let row = row?;
                sum += w3_row(row.get(0), row.get(1), row.get(2), row.get(3));
            }
            Ok(sum)
        },
    ));
    let pq_async = pqlib_async(ctx)?;
    let stmt = ctx.rt.block_on(pq_async.prepare(W3_SQL))?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        "query_raw().await; next_chunk().await",
        move |warm| {
            ctx.rt.block_on(async {
                let limit = size(n, warm) as i32;
                let mut stream = pq_async.query_raw(&stmt, [&limit]).await?;
                let mut sum = 0;
                while let Some(chunk) = stream.next_chunk().await {
                    for row in &chunk? {
                        sum += w3_row(row.get(0), row.get(1), row.get(2), row.get(3));
                    }
                }
                Ok(sum)
            })
        },
    ));

    let mut pg = postgres_conn(ctx)?;
    let stmt = pg.prepare(W3_SQL)?;
    entries.push(Entry::new(
        Client::Postgres,
        "query_raw(); RowIter",
        move |warm| {
            use postgres::fallible_iterator::FallibleIterator;
            let limit = size(n, warm) as i32;
            let mut rows = pg.query_raw(&stmt, [&limit])?;
            let mut sum = 0;
            while let Some(row) = rows.next()? {
                sum += w3_row(row.get(0), row.get(1), row.get(2), row.get(3));
            }
            Ok(sum)
        },
    ));

    let tpg = tokio_pg(ctx)?;
    let stmt = ctx.rt.block_on(tpg.prepare(W3_SQL))?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        "query_raw().await; RowStream",
        move |warm| {
            ctx.rt.block_on(async {
                let limit = size(n, warm) as i32;
                let mut rows = pin!(tpg.query_raw(&stmt, [&limit]).await?);
                let mut sum = 0;
                while let Some(row) = rows.next().await {
                    let row = row?;
                    sum += w3_row(row.get(0), row.get(1), row.get(2), row.get(3));
                }
                Ok(sum)
            })
        },
    ));

    let mut sq = sqlx_conn(ctx)?;
    entries.push(Entry::new(
        Client::Sqlx,
        "query().fetch() stream",
        move |warm| {
            ctx.rt.block_on(async {
                let limit = size(n, warm) as i32;
                let mut rows = sqlx::query(W3_SQL).bind(limit).fetch(&mut sq);
                let mut sum = 0;
                while let Some(row) = rows.try_next().await? {
                    let _ts: chrono::DateTime<chrono::Utc> = row.try_get(3)?;
                    sum += w3_row(
                        row.try_get(0)?,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        UNIX_EPOCH,
                    );
                }
                Ok(sum)
            })
        },
    ));
    missing.push((
        Client::Psycopg,
        "not run (W3 is run with the whole result)".into(),
    ));

    Ok(Variant {
        id: "W3s",
        title: "decode the same rows, streamed".into(),
        unit: format!("{n} rows"),
        reset: None,
        volume: None,
        entries,
        missing,
    })
}

// ---------------------------------------------------------------------------------------------
// W4: inserting rows (int4, text ~20 B, float8, timestamptz) four ways.

fn w4<'a>(ctx: &'a Ctx<'a>) -> Result<Vec<Variant<'a>>> {
    Ok(vec![
        w4_loop(ctx)?,
        w4_pipeline(ctx)?,
        w4_copy_text(ctx)?,
        w4_copy_binary(ctx)?,
    ])
}

fn w4_loop<'a>(ctx: &'a Ctx<'a>) -> Result<Variant<'a>> {
    let n = ctx.sizes.w4;
    let data = ctx.data;
    let mut entries = Vec::new();
    let mut missing = Vec::new();

    let mut c = c_conn(ctx)?;
    c.prepare("w4", W4_SQL, &[])?;
    entries.push(Entry::new(
        Client::C,
        "BEGIN; PQexecPrepared × n; COMMIT",
        move |warm| Ok(c.w4_loop(size(n, warm), &data.texts, BASE_US)?),
    ));

    let mut conn = pqlib_conn(ctx)?;
    let stmt = conn.prepare(W4_SQL)?;
    entries.push(Entry::new(
        Client::PqlibSync,
        "transaction(); execute(&Statement) × n",
        move |warm| {
            let mut tx = conn.transaction()?;
            let mut sum = 0;
            for i in 0..size(n, warm) {
                let (a, c) = (i as i32, i as f64 * 0.5);
                sum += tx.execute(&stmt, &[&a, &data.text(i), &c, &ts(i)])? as i64;
            }
            tx.commit()?;
            Ok(sum)
        },
    ));

    let mut client = pqlib_async(ctx)?;
    let stmt = ctx.rt.block_on(client.prepare(W4_SQL))?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        "transaction().await; execute().await × n",
        move |warm| {
            ctx.rt.block_on(async {
                let tx = client.transaction().await?;
                let mut sum = 0;
                for i in 0..size(n, warm) {
                    let (a, c) = (i as i32, i as f64 * 0.5);
                    sum += tx.execute(&stmt, &[&a, &data.text(i), &c, &ts(i)]).await? as i64;
                }
                tx.commit().await?;
                Ok(sum)
            })
        },
    ));

    let mut pg = postgres_conn(ctx)?;
    let stmt = pg.prepare(W4_SQL)?;
    entries.push(Entry::new(
        Client::Postgres,
        "transaction(); execute(&Statement) × n",
        move |warm| {
            let mut tx = pg.transaction()?;
            let mut sum = 0;
            for i in 0..size(n, warm) {
                let (a, c) = (i as i32, i as f64 * 0.5);
                sum += tx.execute(&stmt, &[&a, &data.text(i), &c, &ts(i)])? as i64;
            }
            tx.commit()?;
            Ok(sum)
        },
    ));

    let mut tpg = tokio_pg(ctx)?;
    let stmt = ctx.rt.block_on(tpg.prepare(W4_SQL))?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        "transaction().await; execute().await × n",
        move |warm| {
            ctx.rt.block_on(async {
                let tx = tpg.transaction().await?;
                let mut sum = 0;
                for i in 0..size(n, warm) {
                    let (a, c) = (i as i32, i as f64 * 0.5);
                    sum += tx.execute(&stmt, &[&a, &data.text(i), &c, &ts(i)]).await? as i64;
                }
                tx.commit().await?;
                Ok(sum)
            })
        },
    ));

    let mut sq = sqlx_conn(ctx)?;
    entries.push(Entry::new(
        Client::Sqlx,
        "begin(); query().bind()×4.execute × n",
        move |warm| {
            ctx.rt.block_on(async {
                let mut tx = sq.begin().await?;
                let mut sum = 0;
                for i in 0..size(n, warm) {
                    let done = sqlx::query(W4_SQL)
                        .bind(i as i32)
                        .bind(data.text(i))
                        .bind(i as f64 * 0.5)
                        .bind(ts_chrono(i))
                        .execute(&mut *tx)
                        .await?;
                    sum += done.rows_affected() as i64;
                }
                tx.commit().await?;
                Ok(sum)
            })
        },
    ));
    missing.push((
        Client::Psycopg,
        "not in psycopg's set (W4 COPY only)".into(),
    ));

    Ok(Variant {
        id: "W4a",
        title: "insert rows: prepared statement in a loop (one transaction)".into(),
        unit: format!("{n} rows"),
        reset: Some(W4_TRUNCATE),
        volume: None,
        entries,
        missing,
    })
}

fn w4_pipeline<'a>(ctx: &'a Ctx<'a>) -> Result<Variant<'a>> {
    let n = ctx.sizes.w4;
    let data = ctx.data;
    let mut entries = Vec::new();
    let mut missing = Vec::new();

    let mut c = c_conn(ctx)?;
    c.prepare("w4", W4_SQL, &[])?;
    entries.push(Entry::new(
        Client::C,
        format!("pipeline mode, PQpipelineSync every {PIPELINE_BATCH} rows, results read one batch behind"),
        move |_| Ok(c.w4_pipeline(n, PIPELINE_BATCH, &data.texts, BASE_US)?),
    ));

    let mut conn = pqlib_conn(ctx)?;
    let stmt = conn.prepare(W4_SQL)?;
    entries.push(Entry::new(
        Client::PqlibSync,
        format!("pipeline(); sync() every {PIPELINE_BATCH}, results read one batch behind"),
        move |_| {
            let mut pipeline = conn.pipeline()?;
            let mut sum = 0i64;
            let mut unread = 0;
            let mut read = |pipeline: &mut pqlib::Pipeline<'_>, count: usize| -> Result<()> {
                for _ in 0..count + 1 {
                    match pipeline
                        .next_result()
                        .ok_or("a pipeline result is missing")??
                    {
                        pqlib::PipelineResult::Rows(rows) => sum += rows.rows_affected() as i64,
                        pqlib::PipelineResult::Sync => {}
                        other => return Err(format!("unexpected {other:?}").into()),
                    }
                }
                Ok(())
            };
            for start in (0..n).step_by(PIPELINE_BATCH) {
                let end = (start + PIPELINE_BATCH).min(n);
                for i in start..end {
                    let (a, c) = (i as i32, i as f64 * 0.5);
                    pipeline.execute(&stmt, &[&a, &data.text(i), &c, &ts(i)])?;
                }
                pipeline.sync()?;
                if unread > 0 {
                    read(&mut pipeline, unread)?;
                }
                unread = end - start;
            }
            if unread > 0 {
                read(&mut pipeline, unread)?;
            }
            pipeline.finish()?;
            Ok(sum)
        },
    ));

    let client = pqlib_async(ctx)?;
    let stmt = ctx.rt.block_on(client.prepare(W4_SQL))?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        format!("pipeline() batches of {PIPELINE_BATCH} (one sync each), two in flight"),
        move |_| {
            let (client, stmt) = (&client, &stmt);
            ctx.rt
                .block_on(
                    futures::stream::iter((0..n).step_by(PIPELINE_BATCH))
                        .map(|start| async move {
                            let mut batch = client.pipeline();
                            for i in start..(start + PIPELINE_BATCH).min(n) {
                                let (a, c) = (i as i32, i as f64 * 0.5);
                                batch.query(stmt, &[&a, &data.text(i), &c, &ts(i)]).await?;
                            }
                            let results = batch.run().await?;
                            Ok::<i64, pqlib::Error>(
                                results.iter().map(|r| r.rows_affected() as i64).sum(),
                            )
                        })
                        .buffered(2)
                        .try_fold(0i64, |acc, k| async move { Ok(acc + k) }),
                )
                .map_err(Into::into)
        },
    ));
    missing.push((
        Client::Postgres,
        "no pipelining in the blocking client".into(),
    ));

    let tpg = tokio_pg(ctx)?;
    let stmt = ctx.rt.block_on(tpg.prepare(W4_SQL))?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        format!("execute() futures, {PIPELINE_BATCH} in flight (buffer_unordered); pipelined by the client"),
        move |_| {
            let (client, stmt) = (&tpg, &stmt);
            ctx.rt.block_on(
                futures::stream::iter(0..n)
                    .map(|i| async move {
                        let (a, c) = (i as i32, i as f64 * 0.5);
                        client.execute(stmt, &[&a, &data.text(i), &c, &ts(i)]).await
                    })
                    .buffer_unordered(PIPELINE_BATCH)
                    .try_fold(0i64, |acc, k| async move { Ok(acc + k as i64) }),
            )
            .map_err(Into::into)
        },
    ));
    missing.push((Client::Sqlx, "no pipelining in sqlx".into()));
    missing.push((
        Client::Psycopg,
        "not in psycopg's set (W4 COPY only)".into(),
    ));

    Ok(Variant {
        id: "W4b",
        title: "insert rows: pipelined prepared statements".into(),
        unit: format!("{n} rows"),
        reset: Some(W4_TRUNCATE),
        volume: None,
        entries,
        missing,
    })
}

/// The COPY text as the sink-based clients send it: rows appended one by one to a buffer
/// that is sent as a `Bytes` once it holds 64 KiB, as a producer of rows would (and as the C
/// baseline and the `io::Write` clients do).
fn copy_chunks(data: &Data) -> impl Iterator<Item = Bytes> + '_ {
    let mut prev = 0;
    let mut ends = data.copy_ends.iter();
    let mut buffer = bytes::BytesMut::with_capacity(2 * COPY_CHUNK);
    std::iter::from_fn(move || {
        for &end in ends.by_ref() {
            buffer.extend_from_slice(&data.copy_text[prev..end]);
            prev = end;
            if buffer.len() >= COPY_CHUNK {
                return Some(buffer.split().freeze());
            }
        }
        (!buffer.is_empty()).then(|| buffer.split().freeze())
    })
}

/// The size of the pieces COPY data is sent in.
const COPY_CHUNK: usize = 64 * 1024;

fn w4_copy_text<'a>(ctx: &'a Ctx<'a>) -> Result<Variant<'a>> {
    let n = ctx.sizes.w4;
    let data = ctx.data;
    let mut entries = Vec::new();
    let mut missing = Vec::new();
    let rows = move || {
        let mut prev = 0;
        data.copy_ends.iter().map(move |&end| {
            let row = &data.copy_text[prev..end];
            prev = end;
            row
        })
    };

    let mut c = c_conn(ctx)?;
    entries.push(Entry::new(
        Client::C,
        "rows memcpy'd into a 64 KiB buffer, PQputCopyData per buffer",
        move |_| Ok(c.w4_copy_text(W4_COPY_TEXT, &data.copy_text, &data.copy_ends)?),
    ));

    let mut conn = pqlib_conn(ctx)?;
    entries.push(Entry::new(
        Client::PqlibSync,
        "copy_in(); write_all per row; finish()",
        move |_| {
            use std::io::Write;
            let mut writer = conn.copy_in(W4_COPY_TEXT)?;
            for row in rows() {
                writer.write_all(row)?;
            }
            Ok(writer.finish()? as i64)
        },
    ));

    let client = pqlib_async(ctx)?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        "copy_in().await; Sink::send of 64 KiB Bytes",
        move |_| {
            ctx.rt.block_on(async {
                let mut sink = client.copy_in(W4_COPY_TEXT).await?;
                for chunk in copy_chunks(data) {
                    sink.feed(chunk).await?;
                }
                Ok(sink.finish().await? as i64)
            })
        },
    ));

    let mut pg = postgres_conn(ctx)?;
    entries.push(Entry::new(
        Client::Postgres,
        "copy_in(); write_all per row; finish()",
        move |_| {
            use std::io::Write;
            let mut writer = pg.copy_in(W4_COPY_TEXT)?;
            for row in rows() {
                writer.write_all(row)?;
            }
            Ok(writer.finish()? as i64)
        },
    ));

    let tpg = tokio_pg(ctx)?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        "copy_in().await; Sink::send of 64 KiB Bytes",
        move |_| {
            ctx.rt.block_on(async {
                let sink = tpg.copy_in::<_, Bytes>(W4_COPY_TEXT).await?;
                let mut sink = pin!(sink);
                for chunk in copy_chunks(data) {
                    sink.feed(chunk).await?;
                }
                Ok(sink.finish().await? as i64)
            })
        },
    ));

    let mut sq = sqlx_conn(ctx)?;
    entries.push(Entry::new(
        Client::Sqlx,
        "copy_in_raw(); send(64 KiB); finish()",
        move |_| {
            ctx.rt.block_on(async {
                let mut copy = sq.copy_in_raw(W4_COPY_TEXT).await?;
                for chunk in copy_chunks(data) {
                    copy.send(chunk).await?;
                }
                Ok(copy.finish().await? as i64)
            })
        },
    ));

    psycopg_entry(
        ctx,
        &mut missing,
        &mut entries,
        "W4c",
        n,
        "cursor.copy(); write(line) per row",
    );

    Ok(Variant {
        id: "W4c",
        title: "insert rows: COPY FROM STDIN, text format".into(),
        unit: format!("{n} rows, {:.1} MB", data.copy_text.len() as f64 / 1e6),
        reset: Some(W4_TRUNCATE),
        volume: None,
        entries,
        missing,
    })
}

fn w4_copy_binary<'a>(ctx: &'a Ctx<'a>) -> Result<Variant<'a>> {
    let n = ctx.sizes.w4;
    let data = ctx.data;
    let mut entries = Vec::new();
    let mut missing = Vec::new();

    let mut c = c_conn(ctx)?;
    entries.push(Entry::new(
        Client::C,
        "rows encoded by hand into a 64 KiB buffer, PQputCopyData per buffer",
        move |_| Ok(c.w4_copy_binary(W4_COPY_BINARY, n, &data.texts, BASE_US)?),
    ));

    let mut conn = pqlib_conn(ctx)?;
    entries.push(Entry::new(
        Client::PqlibSync,
        "binary_copy::BinaryCopyInWriter::write per row",
        move |_| {
            let writer = conn.copy_in(W4_COPY_BINARY)?;
            let mut writer = pqlib::binary_copy::BinaryCopyInWriter::new(writer, &W4_TYPES);
            for i in 0..n {
                let (a, c) = (i as i32, i as f64 * 0.5);
                writer.write(&[&a, &data.text(i), &c, &ts(i)])?;
            }
            Ok(writer.finish()? as i64)
        },
    ));

    let client = pqlib_async(ctx)?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        "tokio::BinaryCopyInWriter::write(..).await per row",
        move |_| {
            ctx.rt.block_on(async {
                let sink = client.copy_in(W4_COPY_BINARY).await?;
                let mut writer = pqlib::tokio::BinaryCopyInWriter::new(sink, &W4_TYPES);
                for i in 0..n {
                    let (a, c) = (i as i32, i as f64 * 0.5);
                    writer.write(&[&a, &data.text(i), &c, &ts(i)]).await?;
                }
                Ok(writer.finish().await? as i64)
            })
        },
    ));

    let mut pg = postgres_conn(ctx)?;
    entries.push(Entry::new(
        Client::Postgres,
        "binary_copy::BinaryCopyInWriter::write per row",
        move |_| {
            let writer = pg.copy_in(W4_COPY_BINARY)?;
            let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(writer, &W4_TYPES);
            for i in 0..n {
                let (a, c) = (i as i32, i as f64 * 0.5);
                writer.write(&[&a, &data.text(i), &c, &ts(i)])?;
            }
            Ok(writer.finish()? as i64)
        },
    ));

    let tpg = tokio_pg(ctx)?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        "binary_copy::BinaryCopyInWriter::write(..).await per row",
        move |_| {
            ctx.rt.block_on(async {
                let sink = tpg.copy_in(W4_COPY_BINARY).await?;
                let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, &W4_TYPES);
                let mut writer = pin!(writer);
                for i in 0..n {
                    let (a, c) = (i as i32, i as f64 * 0.5);
                    writer
                        .as_mut()
                        .write(&[&a, &data.text(i), &c, &ts(i)])
                        .await?;
                }
                Ok(writer.finish().await? as i64)
            })
        },
    ));
    missing.push((Client::Sqlx, "no binary COPY encoder in sqlx".into()));

    psycopg_entry(
        ctx,
        &mut missing,
        &mut entries,
        "W4d",
        n,
        "cursor.copy(); set_types; write_row per row",
    );

    Ok(Variant {
        id: "W4d",
        title: "insert rows: COPY FROM STDIN, binary format".into(),
        unit: format!("{n} rows"),
        reset: Some(W4_TRUNCATE),
        volume: None,
        entries,
        missing,
    })
}

// ---------------------------------------------------------------------------------------------
// W5: COPY TO STDOUT, bytes counted and discarded.

fn w5<'a>(ctx: &'a Ctx<'a>) -> Result<Vec<Variant<'a>>> {
    let mut entries = Vec::new();
    let mut missing = Vec::new();

    let mut c = c_conn(ctx)?;
    entries.push(Entry::new(
        Client::C,
        "PQgetCopyData loop (blocking), PQfreemem",
        move |_| Ok(c.w5(W5_SQL)?),
    ));

    let mut conn = pqlib_conn(ctx)?;
    entries.push(Entry::new(
        Client::PqlibSync,
        "copy_out(); fill_buf/consume",
        move |_| {
            use std::io::BufRead;
            let mut reader = conn.copy_out(W5_SQL)?;
            let mut total = 0i64;
            loop {
                let n = reader.fill_buf()?.len();
                if n == 0 {
                    break;
                }
                total += n as i64;
                reader.consume(n);
            }
            Ok(total)
        },
    ));

    let client = pqlib_async(ctx)?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        "copy_out().await; Stream of Bytes",
        move |_| {
            ctx.rt.block_on(async {
                let mut stream = client.copy_out(W5_SQL).await?;
                let mut total = 0i64;
                while let Some(chunk) = stream.next().await {
                    total += chunk?.len() as i64;
                }
                Ok(total)
            })
        },
    ));

    let mut pg = postgres_conn(ctx)?;
    entries.push(Entry::new(
        Client::Postgres,
        "copy_out(); fill_buf/consume",
        move |_| {
            use std::io::BufRead;
            let mut reader = pg.copy_out(W5_SQL)?;
            let mut total = 0i64;
            loop {
                let n = reader.fill_buf()?.len();
                if n == 0 {
                    break;
                }
                total += n as i64;
                reader.consume(n);
            }
            Ok(total)
        },
    ));

    let tpg = tokio_pg(ctx)?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        "copy_out().await; Stream of Bytes",
        move |_| {
            ctx.rt.block_on(async {
                let mut stream = pin!(tpg.copy_out(W5_SQL).await?);
                let mut total = 0i64;
                while let Some(chunk) = stream.next().await {
                    total += chunk?.len() as i64;
                }
                Ok(total)
            })
        },
    ));

    let mut sq = sqlx_conn(ctx)?;
    entries.push(Entry::new(
        Client::Sqlx,
        "copy_out_raw(); Stream of Bytes",
        move |_| {
            ctx.rt.block_on(async {
                let mut stream = sq.copy_out_raw(W5_SQL).await?;
                let mut total = 0i64;
                while let Some(chunk) = stream.next().await {
                    total += chunk?.len() as i64;
                }
                Ok(total)
            })
        },
    ));

    psycopg_entry(
        ctx,
        &mut missing,
        &mut entries,
        "W5",
        0,
        "cursor.copy(); for data in copy",
    );

    let mb = ctx.sizes.w5_rows as f64 * 78.0 / 1e6;
    Ok(vec![Variant {
        id: "W5",
        title: "COPY w5 TO STDOUT, data discarded".into(),
        unit: format!("{} rows, ~{mb:.0} MB", ctx.sizes.w5_rows),
        reset: None,
        volume: None,
        entries,
        missing,
    }])
}

// ---------------------------------------------------------------------------------------------
// W6: independent `SELECT $1::int8`, pipelined and sequential.

fn w6<'a>(ctx: &'a Ctx<'a>) -> Result<Vec<Variant<'a>>> {
    Ok(vec![w6_variant(ctx, true)?, w6_variant(ctx, false)?])
}

fn w6_variant<'a>(ctx: &'a Ctx<'a>, pipelined: bool) -> Result<Variant<'a>> {
    let n = ctx.sizes.w6;
    let batches = ctx.sizes.w6_batches;
    let mut entries = Vec::new();
    let mut missing = Vec::new();

    let mut c = c_conn(ctx)?;
    c.prepare("w6", W6_SQL, &[])?;
    entries.push(if pipelined {
        Entry::new(
            Client::C,
            "pipeline mode: n × PQsendQueryPrepared, one PQpipelineSync",
            move |_| {
                let mut sum = 0;
                for _ in 0..batches {
                    sum += c.w6_pipelined(n)?;
                }
                Ok(sum)
            },
        )
    } else {
        Entry::new(Client::C, "PQexecPrepared × n", move |_| {
            let mut sum = 0;
            for _ in 0..batches {
                sum += c.w6_sequential(n)?;
            }
            Ok(sum)
        })
    });

    let mut conn = pqlib_conn(ctx)?;
    let stmt = conn.prepare(W6_SQL)?;
    entries.push(if pipelined {
        Entry::new(
            Client::PqlibSync,
            "pipeline(); query × n; sync(); next_result",
            move |_| {
                let mut sum = 0i64;
                for _ in 0..batches {
                    let mut pipeline = conn.pipeline()?;
                    for i in 1..=n as i64 {
                        pipeline.query(&stmt, &[&i])?;
                    }
                    pipeline.sync()?;
                    while let Some(result) = pipeline.next_result() {
                        if let pqlib::PipelineResult::Rows(rows) = result? {
                            sum += rows.get(0).ok_or("no row")?.get::<_, i64>(0);
                        }
                    }
                    pipeline.finish()?;
                }
                Ok(sum)
            },
        )
    } else {
        Entry::new(Client::PqlibSync, "query_one(&Statement) × n", move |_| {
            let mut sum = 0i64;
            for _ in 0..batches {
                for i in 1..=n as i64 {
                    sum += conn.query_one(&stmt, &[&i])?.get::<_, i64>(0);
                }
            }
            Ok(sum)
        })
    });

    let client = pqlib_async(ctx)?;
    let stmt = ctx.rt.block_on(client.prepare(W6_SQL))?;
    entries.push(Entry::new(
        Client::PqlibAsync,
        if pipelined {
            "pipeline(): n queries, one sync, stream() of results"
        } else {
            "query_one().await × n"
        },
        move |_| {
            let (client, stmt) = (&client, &stmt);
            ctx.rt.block_on(async {
                let mut sum = 0i64;
                for _ in 0..batches {
                    if pipelined {
                        let mut batch = client.pipeline();
                        for i in 1..=n as i64 {
                            batch.query(stmt, &[&i]).await?;
                        }
                        let mut results = batch.stream()?;
                        while let Some(rows) = results.next_result().await {
                            sum += rows?.get(0).ok_or("no row")?.get::<_, i64>(0);
                        }
                    } else {
                        for i in 1..=n as i64 {
                            sum += client.query_one(stmt, &[&i]).await?.get::<_, i64>(0);
                        }
                    }
                }
                Ok(sum)
            })
        },
    ));

    if pipelined {
        missing.push((
            Client::Postgres,
            "no pipelining in the blocking client".into(),
        ));
    } else {
        let mut pg = postgres_conn(ctx)?;
        let stmt = pg.prepare(W6_SQL)?;
        entries.push(Entry::new(
            Client::Postgres,
            "query_one(&Statement) × n",
            move |_| {
                let mut sum = 0i64;
                for _ in 0..batches {
                    for i in 1..=n as i64 {
                        sum += pg.query_one(&stmt, &[&i])?.get::<_, i64>(0);
                    }
                }
                Ok(sum)
            },
        ));
    }

    let tpg = tokio_pg(ctx)?;
    let stmt = ctx.rt.block_on(tpg.prepare(W6_SQL))?;
    entries.push(Entry::new(
        Client::TokioPostgres,
        if pipelined {
            "join_all of n query_one futures"
        } else {
            "query_one().await × n"
        },
        move |_| {
            let (client, stmt) = (&tpg, &stmt);
            ctx.rt.block_on(async {
                let mut sum = 0i64;
                for _ in 0..batches {
                    if pipelined {
                        let rows = futures::future::try_join_all(
                            (1..=n as i64)
                                .map(|i| async move { client.query_one(stmt, &[&i]).await }),
                        )
                        .await?;
                        sum += rows.iter().map(|r| r.get::<_, i64>(0)).sum::<i64>();
                    } else {
                        for i in 1..=n as i64 {
                            sum += client.query_one(stmt, &[&i]).await?.get::<_, i64>(0);
                        }
                    }
                }
                Ok(sum)
            })
        },
    ));

    if pipelined {
        missing.push((Client::Sqlx, "no pipelining in sqlx".into()));
    } else {
        let mut sq = sqlx_conn(ctx)?;
        entries.push(Entry::new(
            Client::Sqlx,
            "query().bind(i).fetch_one × n",
            move |_| {
                ctx.rt.block_on(async {
                    let mut sum = 0i64;
                    for _ in 0..batches {
                        for i in 1..=n as i64 {
                            let row = sqlx::query(W6_SQL).bind(i).fetch_one(&mut sq).await?;
                            sum += row.try_get::<i64, _>(0)?;
                        }
                    }
                    Ok(sum)
                })
            },
        ));
    }

    let (id, how) = if pipelined {
        (
            "W6p",
            "with conn.pipeline(): n × execute(prepare=True, binary=True)",
        )
    } else {
        ("W6s", "execute(prepare=True, binary=True) + fetchone × n")
    };
    psycopg_entry(ctx, &mut missing, &mut entries, id, n * batches, how);

    Ok(Variant {
        id,
        title: if pipelined {
            "independent SELECT $1::int8, pipelined".into()
        } else {
            "independent SELECT $1::int8, sequential".into()
        },
        unit: format!("{batches} × {n} statements"),
        reset: None,
        volume: None,
        entries,
        missing,
    })
}

// ---------------------------------------------------------------------------------------------
// W7: many tasks on one async client, and on a pool of 4.

fn w7<'a>(ctx: &'a Ctx<'a>) -> Result<Vec<Variant<'a>>> {
    Ok(vec![w7_variant(ctx, 1)?, w7_variant(ctx, 4)?])
}

/// Runs `tasks` tokio tasks that share `n` queries, task t using `clients[t % len]`.
async fn spread<C, F, Fut>(clients: &[C], n: usize, tasks: usize, query: F) -> Result<i64>
where
    C: Clone + Send + 'static,
    F: Fn(C, i64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<i64>> + Send,
{
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let client = clients[t % clients.len()].clone();
            let query = query.clone();
            tokio::spawn(async move {
                let mut sum = 0;
                // Task t runs queries t+1, t+1+tasks, …
                let mut i = t + 1;
                while i <= n {
                    sum += query(client.clone(), i as i64).await?;
                    i += tasks;
                }
                Ok::<i64, crate::BoxError>(sum)
            })
        })
        .collect();
    let mut sum = 0;
    for handle in handles {
        sum += handle.await??;
    }
    Ok(sum)
}

fn w7_variant<'a>(ctx: &'a Ctx<'a>, pool: usize) -> Result<Variant<'a>> {
    let n = ctx.sizes.w7;
    let tasks = ctx.sizes.w7_tasks;
    let mut entries = Vec::new();
    let mut missing = Vec::new();

    let mut cs = (0..pool)
        .map(|_| {
            let mut c = c_conn(ctx)?;
            c.prepare("w6", W6_SQL, &[])?;
            Ok(c)
        })
        .collect::<Result<Vec<CConn>>>()?;
    let window = tasks / pool;
    let how = if pool == 1 {
        format!("one connection in pipeline mode, {window} statements in flight, a sync after each")
    } else {
        format!(
            "{pool} threads, each a connection in pipeline mode with {window} statements in flight"
        )
    };
    entries.push(Entry::new(Client::C, how, move |_| {
        let share = n / pool;
        if cs.len() == 1 {
            return Ok(cs[0].w7_window(1, n, window)?);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = cs
                .iter_mut()
                .enumerate()
                .map(|(k, c)| scope.spawn(move || c.w7_window(1 + k * share, share, window)))
                .collect();
            let mut sum = 0;
            for h in handles {
                sum += h.join().map_err(|_| "a C thread panicked")??;
            }
            Ok(sum)
        })
    }));
    not_async(&mut missing);

    let clients = (0..pool)
        .map(|_| pqlib_async(ctx))
        .collect::<Result<Vec<_>>>()?;
    let stmts = clients
        .iter()
        .map(|c| ctx.rt.block_on(c.prepare(W6_SQL)))
        .collect::<Result<Vec<_>, _>>()?;
    let pairs: Vec<_> = clients.into_iter().zip(stmts).collect();
    entries.push(Entry::new(
        Client::PqlibAsync,
        format!("{tasks} tokio tasks, query_one(&Statement).await on {pool} shared Client(s)"),
        move |_| {
            ctx.rt
                .block_on(spread(&pairs, n, tasks, |(client, stmt), i| async move {
                    Ok(client.query_one(&stmt, &[&i]).await?.get::<_, i64>(0))
                }))
        },
    ));

    let clients = (0..pool)
        .map(|_| tokio_pg(ctx))
        .collect::<Result<Vec<_>>>()?;
    let stmts = clients
        .iter()
        .map(|c| ctx.rt.block_on(c.prepare(W6_SQL)))
        .collect::<Result<Vec<_>, _>>()?;
    let pairs: Vec<_> = clients
        .into_iter()
        .map(std::sync::Arc::new)
        .zip(stmts)
        .collect();
    entries.push(Entry::new(
        Client::TokioPostgres,
        format!("{tasks} tokio tasks, query_one(&Statement).await on {pool} shared Client(s)"),
        move |_| {
            ctx.rt
                .block_on(spread(&pairs, n, tasks, |(client, stmt), i| async move {
                    Ok(client.query_one(&stmt, &[&i]).await?.get::<_, i64>(0))
                }))
        },
    ));

    let sq = sqlx_pool(ctx, pool as u32)?;
    entries.push(Entry::new(
        Client::Sqlx,
        format!("{tasks} tokio tasks, query().fetch_one(&PgPool) with {pool} connection(s)"),
        move |_| {
            ctx.rt.block_on(spread(
                std::slice::from_ref(&sq),
                n,
                tasks,
                |pool, i| async move {
                    let row = sqlx::query(W6_SQL).bind(i).fetch_one(&pool).await?;
                    Ok(row.try_get::<i64, _>(0)?)
                },
            ))
        },
    ));
    if let (Some(rt), true) = (ctx.multi, pool > 1) {
        w7_multi(ctx, rt, pool, &mut entries)?;
    }
    missing.push((Client::Psycopg, "not in psycopg's set".into()));

    Ok(Variant {
        id: if pool == 1 { "W7a" } else { "W7b" },
        title: if pool == 1 {
            format!("{tasks} concurrent tasks on one connection")
        } else {
            format!("{tasks} concurrent tasks on a pool of {pool} connections")
        },
        unit: format!("{n} SELECT $1::int8"),
        reset: None,
        volume: None,
        entries,
        missing,
    })
}

// ---------------------------------------------------------------------------------------------
// W8: W1 and W2 with `PreparePolicy::Never` (SQL text as the unnamed statement), direct and
// through a PgBouncer in transaction mode.

/// The parameters of one W8 variant: W1's 1..=n or W2's aids.
#[derive(Clone, Copy)]
enum Args<'a> {
    Count(usize),
    Aids(&'a [i32]),
}

impl Args<'_> {
    fn len(self, warm: bool) -> usize {
        match self {
            Args::Count(n) => size(n, warm),
            Args::Aids(aids) => size(aids.len(), warm),
        }
    }

    fn get(self, k: usize) -> i32 {
        match self {
            Args::Count(_) => k as i32 + 1,
            Args::Aids(aids) => aids[k],
        }
    }

    /// What each row adds to the checksum besides its value: W2 counts its rows.
    fn extra(self) -> i64 {
        match self {
            Args::Count(_) => 0,
            Args::Aids(_) => 1,
        }
    }
}

fn never_config(conninfo: &str) -> Result<pqlib::Config> {
    let mut config: pqlib::Config = conninfo.parse()?;
    config.prepare_policy(pqlib::PreparePolicy::Never);
    Ok(config)
}

/// A W8 variant that cannot run: every client's row says why.
fn w8_skipped<'a>(id: &'static str, title: String, unit: String, why: &str) -> Variant<'a> {
    Variant {
        id,
        title,
        unit,
        reset: None,
        volume: None,
        entries: Vec::new(),
        missing: vec![(Client::C, format!("skipped (every client): {why}"))],
    }
}

fn w8<'a>(ctx: &'a Ctx<'a>) -> Result<Vec<Variant<'a>>> {
    let bouncer = ctx.bouncer.as_deref();
    let w1 = Args::Count(ctx.sizes.w1);
    let w2 = Args::Aids(&ctx.data.aids);
    let w1_unit = format!("{} round trips", ctx.sizes.w1);
    let w2_unit = format!(
        "{} queries, scale {}",
        ctx.data.aids.len(),
        ctx.sizes.pgbench_scale
    );
    let bouncer_title = "through PgBouncer (transaction mode, pool_size 4)";
    let mut variants = Vec::new();
    for (id, sql, args, what, unit) in [
        ("W8a", W1_SQL, w1, "SELECT $1::int4", &w1_unit),
        ("W8b", W1_SQL, w1, "SELECT $1::int4", &w1_unit),
        ("W8c", W2_SQL, w2, "pgbench point select", &w2_unit),
        ("W8d", W2_SQL, w2, "pgbench point select", &w2_unit),
    ] {
        let pooled = id == "W8b" || id == "W8d";
        let title = format!(
            "{what}, PreparePolicy::Never, {}",
            if pooled { bouncer_title } else { "direct" }
        );
        if sql == W2_SQL
            && let Some(why) = &ctx.pgbench_error
        {
            variants.push(w8_skipped(
                id,
                title,
                unit.clone(),
                &format!("needs pgbench -i: {why}"),
            ));
            continue;
        }
        let conninfo = if pooled {
            match bouncer {
                Ok(conninfo) => conninfo,
                Err(why) => {
                    variants.push(w8_skipped(id, title, unit.clone(), why));
                    continue;
                }
            }
        } else {
            ctx.conninfo
        };
        variants.push(Variant {
            id,
            title,
            unit: unit.clone(),
            reset: None,
            volume: None,
            entries: w8_entries(ctx, conninfo, sql, args)?,
            missing: vec![
                (
                    Client::Sqlx,
                    "not in W8's set (its unnamed-statement path is `persistent(false)`)".into(),
                ),
                (
                    Client::Psycopg,
                    "not in psycopg's set (W1, W3, W4 COPY, W5, W6)".into(),
                ),
            ],
        });
    }
    Ok(variants)
}

/// Every W8 client's entry: `sql` with one int4 parameter per value of `args`, as the unnamed
/// statement, over connections to `conninfo` (the server, or the PgBouncer).
fn w8_entries<'a>(
    ctx: &'a Ctx<'a>,
    conninfo: &'a str,
    sql: &'static str,
    args: Args<'a>,
) -> Result<Vec<Entry<'a>>> {
    let mut entries = Vec::new();
    let extra = args.extra();

    let mut c = CConn::connect(conninfo)?;
    entries.push(Entry::new(
        Client::C,
        "PQexecParams with the int4 type given, binary (the unnamed statement)",
        move |warm| {
            Ok(match args {
                Args::Count(_) => c.w1_params(sql, args.len(warm))?,
                Args::Aids(aids) => c.w2_params(sql, &aids[..args.len(warm)])?,
            })
        },
    ));

    let config = never_config(conninfo)?;
    let mut conn = config.connect()?;
    entries.push(Entry::new(
        Client::PqlibSync,
        "query_one(sql text) with PreparePolicy::Never",
        move |warm| {
            let mut sum = 0i64;
            for k in 0..args.len(warm) {
                let v: i32 = conn.query_one(sql, &[&args.get(k)])?.get(0);
                sum += extra + i64::from(v);
            }
            Ok(sum)
        },
    ));

    let (client, connection) = ctx.rt.block_on(pqlib::tokio::connect_config(&config))?;
    ctx.rt.spawn(connection);
    entries.push(Entry::new(
        Client::PqlibAsync,
        "query_one(sql text).await with PreparePolicy::Never, sequential",
        move |warm| {
            ctx.rt.block_on(async {
                let mut sum = 0i64;
                for k in 0..args.len(warm) {
                    let v: i32 = client.query_one(sql, &[&args.get(k)]).await?.get(0);
                    sum += extra + i64::from(v);
                }
                Ok(sum)
            })
        },
    ));

    let int4 = tokio_postgres::types::Type::INT4;
    let mut pg = postgres::Client::connect(conninfo, postgres::NoTls)?;
    entries.push(Entry::new(
        Client::Postgres,
        "query_typed_one(sql text, int4) (the unnamed statement)",
        move |warm| {
            let mut sum = 0i64;
            for k in 0..args.len(warm) {
                let v: i32 = pg
                    .query_typed_one(sql, &[(&args.get(k), int4.clone())])?
                    .get(0);
                sum += extra + i64::from(v);
            }
            Ok(sum)
        },
    ));

    let (tpg, connection) = ctx
        .rt
        .block_on(tokio_postgres::connect(conninfo, tokio_postgres::NoTls))?;
    ctx.rt.spawn(connection);
    entries.push(Entry::new(
        Client::TokioPostgres,
        "query_typed_one(sql text, int4).await (the unnamed statement)",
        move |warm| {
            ctx.rt.block_on(async {
                let int4 = tokio_postgres::types::Type::INT4;
                let mut sum = 0i64;
                for k in 0..args.len(warm) {
                    let v: i32 = tpg
                        .query_typed_one(sql, &[(&args.get(k), int4.clone())])
                        .await?
                        .get(0);
                    sum += extra + i64::from(v);
                }
                Ok(sum)
            })
        },
    ));
    Ok(entries)
}

// ---------------------------------------------------------------------------------------------
// The multi-thread runtime rows: W1 and W7b's async clients once more, on the runtime
// `#[tokio::main]` builds (`Ctx::multi`), each measured run a task spawned on it.

/// Runs `work` as a task on `rt`'s workers and waits for it: the measuring thread only
/// starts it and collects its result.
fn on_workers<T: Send + 'static>(
    rt: &Runtime,
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    rt.block_on(rt.spawn(work))?
}

const ON_MULTI: &str = "in a task spawned on the multi-thread runtime";

fn w1_multi<'a>(
    ctx: &'a Ctx<'a>,
    rt: &'a Runtime,
    n: usize,
    entries: &mut Vec<Entry<'a>>,
) -> Result<()> {
    let client = pqlib_async_on(ctx, rt)?;
    let stmt = rt.block_on(client.prepare(W1_SQL))?;
    entries.push(
        Entry::new(
            Client::PqlibAsync,
            format!("query_one(&Statement).await, sequential, {ON_MULTI}"),
            move |warm| {
                let (client, stmt, n) = (client.clone(), stmt.clone(), size(n, warm));
                on_workers(rt, async move {
                    let mut sum = 0i64;
                    for i in 1..=n as i32 {
                        let v: i32 = client.query_one(&stmt, &[&i]).await?.get(0);
                        sum += i64::from(v);
                    }
                    Ok(sum)
                })
            },
        )
        .on_multi(),
    );

    let tpg = std::sync::Arc::new(tokio_pg_on(ctx, rt)?);
    let stmt = rt.block_on(tpg.prepare(W1_SQL))?;
    entries.push(
        Entry::new(
            Client::TokioPostgres,
            format!("query_one(&Statement).await, {ON_MULTI}"),
            move |warm| {
                let (tpg, stmt, n) = (tpg.clone(), stmt.clone(), size(n, warm));
                on_workers(rt, async move {
                    let mut sum = 0i64;
                    for i in 1..=n as i32 {
                        let v: i32 = tpg.query_one(&stmt, &[&i]).await?.get(0);
                        sum += i64::from(v);
                    }
                    Ok(sum)
                })
            },
        )
        .on_multi(),
    );

    // The task owns the connection while it runs and hands it back.
    let mut sq = Some(sqlx_conn_on(ctx, rt)?);
    entries.push(
        Entry::new(
            Client::Sqlx,
            format!("query(..).bind(i).fetch_one, {ON_MULTI}"),
            move |warm| {
                let mut conn = sq.take().ok_or("the connection went with a failed run")?;
                let n = size(n, warm);
                let (conn, sum) = on_workers(rt, async move {
                    let mut sum = 0i64;
                    for i in 1..=n as i32 {
                        let row = sqlx::query(W1_SQL).bind(i).fetch_one(&mut conn).await?;
                        sum += i64::from(row.try_get::<i32, _>(0)?);
                    }
                    Ok((conn, sum))
                })?;
                sq = Some(conn);
                Ok(sum)
            },
        )
        .on_multi(),
    );
    Ok(())
}

fn w7_multi<'a>(
    ctx: &'a Ctx<'a>,
    rt: &'a Runtime,
    pool: usize,
    entries: &mut Vec<Entry<'a>>,
) -> Result<()> {
    let n = ctx.sizes.w7;
    let tasks = ctx.sizes.w7_tasks;

    let clients = (0..pool)
        .map(|_| pqlib_async_on(ctx, rt))
        .collect::<Result<Vec<_>>>()?;
    let stmts = clients
        .iter()
        .map(|c| rt.block_on(c.prepare(W6_SQL)))
        .collect::<Result<Vec<_>, _>>()?;
    let pairs: Vec<_> = clients.into_iter().zip(stmts).collect();
    entries.push(
        Entry::new(
            Client::PqlibAsync,
            format!(
                "{tasks} tokio tasks, query_one(&Statement).await on {pool} shared Client(s), \
                 started from a task on the multi-thread runtime"
            ),
            move |_| {
                let pairs = pairs.clone();
                on_workers(rt, async move {
                    spread(&pairs, n, tasks, |(client, stmt), i| async move {
                        Ok(client.query_one(&stmt, &[&i]).await?.get::<_, i64>(0))
                    })
                    .await
                })
            },
        )
        .on_multi(),
    );

    let clients = (0..pool)
        .map(|_| tokio_pg_on(ctx, rt))
        .collect::<Result<Vec<_>>>()?;
    let stmts = clients
        .iter()
        .map(|c| rt.block_on(c.prepare(W6_SQL)))
        .collect::<Result<Vec<_>, _>>()?;
    let pairs: Vec<_> = clients
        .into_iter()
        .map(std::sync::Arc::new)
        .zip(stmts)
        .collect();
    entries.push(
        Entry::new(
            Client::TokioPostgres,
            format!(
                "{tasks} tokio tasks, query_one(&Statement).await on {pool} shared Client(s), \
                 started from a task on the multi-thread runtime"
            ),
            move |_| {
                let pairs = pairs.clone();
                on_workers(rt, async move {
                    spread(&pairs, n, tasks, |(client, stmt), i| async move {
                        Ok(client.query_one(&stmt, &[&i]).await?.get::<_, i64>(0))
                    })
                    .await
                })
            },
        )
        .on_multi(),
    );

    let sq = sqlx_pool_on(ctx, rt, pool as u32)?;
    entries.push(
        Entry::new(
            Client::Sqlx,
            format!(
                "{tasks} tokio tasks, query().fetch_one(&PgPool) with {pool} connection(s), \
                 started from a task on the multi-thread runtime"
            ),
            move |_| {
                let sq = sq.clone();
                on_workers(rt, async move {
                    spread(std::slice::from_ref(&sq), n, tasks, |pool, i| async move {
                        let row = sqlx::query(W6_SQL).bind(i).fetch_one(&pool).await?;
                        Ok(row.try_get::<i64, _>(0)?)
                    })
                    .await
                })
            },
        )
        .on_multi(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// W9: a large logical replication stream, received (test_decoding text) and decoded
// (pgoutput), against `pg_recvlogical` writing test_decoding's text to /dev/null.

/// The slot every run's slots are copies of: created before the data and never streamed, so
/// every run decodes the same changes (and the server keeps their WAL until the cleanup).
const W9_BASE_SLOT: &str = "w9_base";
/// The test_decoding slot (C, and pqlib on W9a) and the pgoutput slot (pqlib on W9b).
const W9_TD_SLOT: &str = "w9_td";
const W9_PO_SLOT: &str = "w9_po";
const W9_PUB: &str = "w9_pub";
/// Transactions the rows are inserted in (each well under `logical_decoding_work_mem`, so
/// that the server does not spill them to disk while it decodes).
const W9_TXNS: usize = 10;
/// The longest a W9 run waits for one message before it gives up.
const W9_WAIT: Duration = Duration::from_secs(60);
/// Before every run (untimed): fresh copies of the base slot for both plugins, once the
/// previous run's walsender has let go of them (waited for at most 10 s).
const W9_RESET: &str = "DO $$
DECLARE
  deadline timestamptz := clock_timestamp() + interval '10 s';
BEGIN
  WHILE EXISTS (SELECT 1 FROM pg_replication_slots
                WHERE slot_name IN ('w9_td', 'w9_po') AND active) LOOP
    IF clock_timestamp() > deadline THEN
      RAISE EXCEPTION 'a W9 slot is still in use 10 s after its run';
    END IF;
    PERFORM pg_sleep(0.005);
  END LOOP;
  PERFORM pg_drop_replication_slot(slot_name) FROM pg_replication_slots
    WHERE slot_name IN ('w9_td', 'w9_po');
  PERFORM pg_copy_logical_replication_slot('w9_base', 'w9_td', false, 'test_decoding');
  PERFORM pg_copy_logical_replication_slot('w9_base', 'w9_po', false, 'pgoutput');
END $$";
/// test_decoding's options, for `pg_recvlogical -o` and pqlib alike.
const W9_TD_OPTIONS: [(&str, &str); 1] = [("include-xids", "0")];

/// Drops every W9 slot (`w9_%`): an abandoned slot keeps WAL. Run at the end of the bench.
pub fn w9_cleanup(admin: &mut pqlib::Connection) -> Result<()> {
    admin.batch_execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
         WHERE slot_name LIKE 'w9\\_%' AND NOT active",
    )?;
    Ok(())
}

/// W9's data, once: the table, its publication, the base slot, then the rows; returns the
/// WAL position after them (`pg_current_wal_insert_lsn()`), where every run stops.
fn w9_prepare(admin: &mut pqlib::Connection, rows: usize) -> Result<Lsn> {
    w9_cleanup(admin)?;
    admin.batch_execute(&format!(
        "DROP PUBLICATION IF EXISTS {W9_PUB};
         DROP TABLE IF EXISTS w9;
         CREATE TABLE w9 (id int8 PRIMARY KEY, name text, amount float8, at timestamptz);
         CREATE PUBLICATION {W9_PUB} FOR TABLE w9;"
    ))?;
    admin.batch_execute(&format!(
        "SELECT pg_create_logical_replication_slot('{W9_BASE_SLOT}', 'pgoutput')"
    ))?;
    let per_txn = rows.div_ceil(W9_TXNS);
    let mut first = 1;
    while first <= rows {
        let last = (first + per_txn - 1).min(rows);
        // id g, name `row-%016d`, amount g × 0.5, at 2024-01-01 + g µs.
        admin.batch_execute(&format!(
            "INSERT INTO w9 SELECT g, 'row-' || lpad(g::text, 16, '0'), g * 0.5,
               timestamptz '2024-01-01 00:00:00+00' + g * interval '1 microsecond'
             FROM generate_series({first}, {last}) g"
        ))?;
        first = last + 1;
    }
    // The end of the WAL inserted so far, i.e. of the last commit: not
    // `pg_current_wal_lsn()`, the position written so far, which trails it with
    // `synchronous_commit = off` (as a TempCluster runs) and would cut the last transaction.
    let end: String = admin
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])?
        .get(0);
    admin.batch_execute("CHECKPOINT")?;
    Ok(end.parse()?)
}

/// What a W9 client does with one message of the stream, stopping where `pg_recvlogical -E`
/// stops: at a change at or past the end position (one past it is not processed), or at a
/// keepalive saying the server has sent everything up to it.
enum W9Step<'m> {
    Process(&'m Bytes, bool),
    Stop,
    Next,
}

fn w9_step(message: &ReplicationMessage, end: Lsn) -> W9Step<'_> {
    match message {
        ReplicationMessage::XLogData(data) if data.wal_start() > end => W9Step::Stop,
        ReplicationMessage::XLogData(data) => W9Step::Process(data.data(), data.wal_start() >= end),
        ReplicationMessage::PrimaryKeepalive(keepalive) if keepalive.wal_end >= end => W9Step::Stop,
        _ => W9Step::Next,
    }
}

/// What a W9 run counted: rows, payload bytes, and the decoded values' sums.
#[derive(Default)]
struct W9Count {
    rows: u64,
    bytes: u64,
    ids: i64,
    text_bytes: u64,
    amounts: f64,
    micros: i64,
}

impl W9Count {
    /// test_decoding: a row is a message `table public.w9: INSERT: …`.
    fn text(&mut self, payload: &[u8]) {
        self.bytes += payload.len() as u64;
        if payload.starts_with(b"table ") {
            self.rows += 1;
        }
    }

    /// pgoutput: every message decoded, every column of every row read with `try_get`.
    fn pgoutput(&mut self, decoder: &mut Decoder, payload: &Bytes) -> Result<()> {
        self.bytes += payload.len() as u64;
        if let Message::Insert {
            relation_oid, new, ..
        } = decoder.decode(payload.clone())?
        {
            let relation = decoder
                .relation(relation_oid)
                .ok_or("an Insert before its table's Relation message")?;
            let id: i64 = new.try_get(relation, 0usize)?;
            let name: &str = new.try_get(relation, 1usize)?;
            let amount: f64 = new.try_get(relation, 2usize)?;
            let at: SystemTime = new.try_get(relation, 3usize)?;
            self.rows += 1;
            self.ids += id;
            self.text_bytes += name.len() as u64;
            self.amounts += amount;
            self.micros = self.micros.wrapping_add(
                at.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64),
            );
        }
        Ok(())
    }

    /// The rows, checked against the table (and for pgoutput, the sum of the ids).
    fn check(self, rows: usize, decoded: bool) -> Result<i64> {
        let n = rows as i64;
        if self.rows != rows as u64 {
            return Err(format!("{} rows in the stream, {rows} inserted", self.rows).into());
        }
        if decoded && self.ids != n * (n + 1) / 2 {
            return Err(format!(
                "the decoded ids sum to {}, not {}",
                self.ids,
                n * (n + 1) / 2
            )
            .into());
        }
        std::hint::black_box((self.text_bytes, self.amounts, self.micros));
        Ok(self.rows as i64)
    }
}

fn w9_config(ctx: &Ctx<'_>) -> Result<pqlib::Config> {
    Ok(ctx.conninfo.parse()?)
}

fn w9_pgoutput_options(server_version: u32) -> Result<Vec<(String, String)>> {
    Ok(PgOutputOptions::for_server(server_version, [W9_PUB])
        .binary(server_version >= 140000)
        .option_values()?)
}

/// pqlib (blocking): connects, streams `slot` to `end`, stops; test_decoding text counted
/// (`decode` false) or pgoutput decoded.
fn w9_pqlib(config: &pqlib::Config, decode: bool, end: Lsn) -> Result<W9Count> {
    let mut conn = ReplicationConnection::connect(config, ReplicationMode::Logical)?;
    let (slot, options) = if decode {
        (W9_PO_SLOT, w9_pgoutput_options(conn.server_version())?)
    } else {
        (W9_TD_SLOT, owned(&W9_TD_OPTIONS))
    };
    let mut decoder = PgOutputOptions::for_server(conn.server_version(), [W9_PUB]).decoder();
    let mut count = W9Count::default();
    let mut stream = conn.start_logical_replication(slot, Lsn::INVALID, &options[..])?;
    loop {
        let message = match stream.recv_timeout(W9_WAIT)? {
            Received::Message(message) => message,
            Received::End => {
                return Err("the server ended the stream before the end position".into());
            }
            _ => return Err(format!("no message within {W9_WAIT:?}").into()),
        };
        match w9_step(&message, end) {
            W9Step::Process(payload, last) => {
                if decode {
                    count.pgoutput(&mut decoder, payload)?;
                } else {
                    count.text(payload);
                }
                if last {
                    break;
                }
            }
            W9Step::Stop => break,
            W9Step::Next => {}
        }
    }
    stream.stop()?;
    Ok(count)
}

/// pqlib::tokio: as [`w9_pqlib`], through `pqlib::tokio::ReplicationClient`.
async fn w9_pqlib_async(config: &pqlib::Config, decode: bool, end: Lsn) -> Result<W9Count> {
    let mut client = ReplicationClient::connect(config, ReplicationMode::Logical).await?;
    let (slot, options) = if decode {
        (W9_PO_SLOT, w9_pgoutput_options(client.server_version())?)
    } else {
        (W9_TD_SLOT, owned(&W9_TD_OPTIONS))
    };
    let mut decoder = PgOutputOptions::for_server(client.server_version(), [W9_PUB]).decoder();
    let mut count = W9Count::default();
    let mut stream = client
        .start_logical_replication(slot, Lsn::INVALID, &options[..])
        .await?;
    loop {
        let message = match tokio::time::timeout(W9_WAIT, stream.next()).await {
            Ok(Some(message)) => message?,
            Ok(None) => return Err("the server ended the stream before the end position".into()),
            Err(_) => return Err(format!("no message within {W9_WAIT:?}").into()),
        };
        match w9_step(&message, end) {
            W9Step::Process(payload, last) => {
                if decode {
                    count.pgoutput(&mut decoder, payload)?;
                } else {
                    count.text(payload);
                }
                if last {
                    break;
                }
            }
            W9Step::Stop => break,
            W9Step::Next => {}
        }
    }
    stream.stop().await?;
    Ok(count)
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// `pg_recvlogical` (C, libpq): the test_decoding slot from its start to `end`, written to
/// /dev/null. It cannot count rows there: the checksum is the table's row count when it
/// exits with status 0.
fn w9_recvlogical(ctx: &Ctx<'_>, end: Lsn, rows: usize) -> Result<i64> {
    let bin = ctx
        .pg_bin
        .as_ref()
        .map_or_else(|| "pg_recvlogical".into(), |dir| dir.join("pg_recvlogical"));
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["--start", "--no-loop", "-S", W9_TD_SLOT, "-f", "/dev/null"])
        .arg("-E")
        .arg(end.to_string())
        .arg("-d")
        .arg(ctx.conninfo);
    for (name, value) in W9_TD_OPTIONS {
        cmd.arg("-o").arg(format!("{name}={value}"));
    }
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            bin.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    Ok(rows as i64)
}

/// The rows and payload bytes of both streams, measured once (untimed) with pqlib.
fn w9_volume(
    admin: &mut pqlib::Connection,
    config: &pqlib::Config,
    end: Lsn,
    rows: usize,
) -> Result<(u64, u64)> {
    admin.batch_execute(W9_RESET)?;
    let text = w9_pqlib(config, false, end)?;
    let pgoutput = w9_pqlib(config, true, end)?;
    let bytes = (text.bytes, pgoutput.bytes);
    text.check(rows, false)?;
    pgoutput.check(rows, true)?;
    Ok(bytes)
}

fn w9<'a>(ctx: &'a Ctx<'a>) -> Result<Vec<Variant<'a>>> {
    let rows = ctx.sizes.w9;
    let titles = [
        (
            "W9a",
            "logical stream received, test_decoding text".to_owned(),
        ),
        (
            "W9b",
            "logical stream fully decoded, pgoutput (C: received, test_decoding text)".to_owned(),
        ),
    ];
    let unit = format!("{rows} rows in {W9_TXNS} transactions");
    let mut admin = pqlib::Connection::connect(ctx.conninfo)?;
    let wal_level: String = admin.query_one("SHOW wal_level", &[])?.get(0);
    if wal_level != "logical" {
        let why = format!("the server's wal_level is {wal_level}, W9 needs logical");
        return Ok(titles
            .into_iter()
            .map(|(id, title)| skipped(id, title, unit.clone(), &why))
            .collect());
    }
    let end = w9_prepare(&mut admin, rows)?;
    let config = w9_config(ctx)?;
    let (text_bytes, pgoutput_bytes) = w9_volume(&mut admin, &config, end, rows)?;
    let version = admin.server_version();
    let binary = version >= 140000;
    let format = if binary { "binary" } else { "text" };
    eprintln!(
        "W9: {rows} rows up to {end}; test_decoding {:.1} MB, pgoutput ({format}) {:.1} MB",
        text_bytes as f64 / 1e6,
        pgoutput_bytes as f64 / 1e6
    );
    let text_what = "test_decoding text".to_owned();
    let c_how = format!(
        "`pg_recvlogical --start --no-loop -S {W9_TD_SLOT} -E <end> -f /dev/null -o \
         include-xids=0` (the server's own, C on libpq; its process timed, start to exit); \
         checksum: the inserted row count when it exits with status 0 (to /dev/null it cannot \
         count)"
    );
    let missing = || {
        [
            Client::Postgres,
            Client::TokioPostgres,
            Client::Sqlx,
            Client::Psycopg,
        ]
        .map(|c| (c, "missing: no replication protocol".to_owned()))
        .to_vec()
    };
    let mut variants = Vec::new();
    for (id, title) in titles {
        let decode = id == "W9b";
        let mut entries = Vec::new();
        entries.push(Entry::new(Client::C, c_how.clone(), move |_| {
            w9_recvlogical(ctx, end, rows)
        }));
        let how = if decode {
            format!(
                "ReplicationConnection::connect (timed), START_REPLICATION slot {W9_PO_SLOT} \
                 (pgoutput proto {}, {format}), until the end position; every message \
                 decoded with `Decoder::decode`, every column of every Insert read with \
                 `Tuple::try_get` (i64, &str, f64, SystemTime); checksum: the rows decoded \
                 (their ids' sum checked)",
                PgOutputOptions::highest_proto_version(version)
            )
        } else {
            format!(
                "ReplicationConnection::connect (timed), START_REPLICATION slot {W9_TD_SLOT} \
                 (include-xids 0), `recv_timeout` until the end position as pg_recvlogical \
                 -E; payload bytes counted; checksum: the `table …: INSERT` messages"
            )
        };
        let config_sync = config.clone();
        entries.push(Entry::new(Client::PqlibSync, how.clone(), move |_| {
            w9_pqlib(&config_sync, decode, end)?.check(rows, decode)
        }));
        let config_async = config.clone();
        entries.push(Entry::new(
            Client::PqlibAsync,
            how.replace("ReplicationConnection", "pqlib::tokio::ReplicationClient")
                .replace("`recv_timeout`", "`next().await`"),
            move |_| {
                ctx.rt
                    .block_on(w9_pqlib_async(&config_async, decode, end))?
                    .check(rows, decode)
            },
        ));
        let volume = Volume {
            rows: rows as u64,
            bytes: if decode { pgoutput_bytes } else { text_bytes },
            what: if decode {
                format!("pgoutput, {format}")
            } else {
                text_what.clone()
            },
            c_bytes: text_bytes,
            c_what: text_what.clone(),
        };
        variants.push(Variant {
            id,
            title,
            unit: format!(
                "{unit}, {:.1} MB{}",
                volume.bytes as f64 / 1e6,
                if decode {
                    format!(" of pgoutput; C: {:.1} MB of text", text_bytes as f64 / 1e6)
                } else {
                    String::new()
                }
            ),
            reset: Some(W9_RESET),
            volume: Some(volume),
            entries,
            missing: missing(),
        });
    }
    Ok(variants)
}

/// A variant that cannot run: every client's row says why.
fn skipped<'a>(id: &'static str, title: String, unit: String, why: &str) -> Variant<'a> {
    Variant {
        id,
        title,
        unit,
        reset: None,
        volume: None,
        entries: Vec::new(),
        missing: vec![(Client::C, format!("skipped (every client): {why}"))],
    }
}
