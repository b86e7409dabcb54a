//! Micro-benchmarks of the FFI boundary (issue 7, item 4): the cost per value of
//! `Row::get::<i32>` and `Row::get::<&str>` against the same access written in C, and the cost
//! of one call into libpq (`PQntuples`) from Rust, from C, and through pqlib.
//!
//! `cd bench && cargo bench --bench ffi`. Throughput is in values (or calls): the time per
//! value is 1 / throughput. The numbers are written up in `docs/ffi-cost.md`.

use std::ffi::{CString, c_int};
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pqlib::tempdb::TempCluster;
use pqlib_bench::c::{bl_ntuples_loop, bl_sum_int4, bl_sum_text};
use pqlib_sys as ffi;

/// Rows in the result the value benchmarks read.
const ROWS: usize = 10_000;
/// Calls per iteration in the call benchmarks.
const CALLS: usize = 1000;
const SQL: &str = "SELECT g, g::text FROM generate_series(1, 10000) g";

/// The same result as pqlib's `Rows`, fetched with binary results straight through libpq and
/// freed on drop, for the C and raw-Rust readers.
struct RawResult(*mut ffi::PGresult);

impl RawResult {
    fn fetch(conn: &pqlib::Connection) -> RawResult {
        let sql = CString::new(SQL).unwrap();
        // SAFETY: the connection is alive and idle; no parameters; binary results.
        let res = unsafe {
            ffi::PQexecParams(
                conn.as_ptr(),
                sql.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                1,
            )
        };
        // SAFETY: `res` is a result (or NULL, which PQresultStatus accepts).
        assert_eq!(
            unsafe { ffi::PQresultStatus(res) },
            ffi::ExecStatusType::PGRES_TUPLES_OK
        );
        RawResult(res)
    }
}

impl Drop for RawResult {
    fn drop(&mut self) {
        // SAFETY: we own the result and free it once.
        unsafe { ffi::PQclear(self.0) }
    }
}

fn values(c: &mut Criterion) {
    let cluster = TempCluster::start().expect("a TempCluster for the micro-benchmarks");
    let mut conn = pqlib::Connection::connect(&cluster.conninfo()).unwrap();
    let rows = conn.query(SQL, &[]).unwrap();
    assert_eq!(rows.len(), ROWS);
    let raw = RawResult::fetch(&conn);
    let res = raw.0;

    let mut group = c.benchmark_group("int4 value");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("pqlib Row::get::<_, i32>(0)", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for row in &rows {
                sum += i64::from(row.get::<_, i32>(0));
            }
            black_box(sum)
        })
    });
    group.bench_function("pqlib Row::try_get::<_, i32>(0)", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for row in &rows {
                sum += i64::from(row.try_get::<_, i32>(0).unwrap());
            }
            black_box(sum)
        })
    });
    group.bench_function("pqlib Row::get::<_, i32>(\"g\")", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for row in &rows {
                sum += i64::from(row.get::<_, i32>("g"));
            }
            black_box(sum)
        })
    });
    group.bench_function("Rust raw: PQgetvalue + i32::from_be_bytes", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            // SAFETY: the result is alive; indices in range; int4 values are 4 bytes.
            unsafe {
                let n = ffi::PQntuples(res);
                for r in 0..n {
                    let p = ffi::PQgetvalue(res, r, 0).cast::<[u8; 4]>();
                    sum += i64::from(i32::from_be_bytes(p.read_unaligned()));
                }
            }
            black_box(sum)
        })
    });
    group.bench_function("Rust raw: isnull + getvalue + getlength + checks", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            // SAFETY: as above.
            unsafe {
                let n = ffi::PQntuples(res);
                for r in 0..n {
                    assert!(r < ffi::PQntuples(res) && 0 < ffi::PQnfields(res));
                    if ffi::PQgetisnull(res, r, 0) != 0 {
                        continue;
                    }
                    let p = ffi::PQgetvalue(res, r, 0).cast::<u8>();
                    let len = ffi::PQgetlength(res, r, 0) as usize;
                    let bytes = std::slice::from_raw_parts(p, len);
                    sum += i64::from(i32::from_be_bytes(bytes.try_into().unwrap()));
                }
            }
            black_box(sum)
        })
    });
    group.bench_function(
        "Rust raw: getlength + getvalue, isnull only if empty",
        |b| {
            // What a value costs with the row and column counts cached in `Rows` and
            // PQgetisnull asked only for empty values (PQgetlength gives 0 for NULL): the
            // proposed fast path of `PgResultRef::value`.
            b.iter(|| {
                let mut sum = 0i64;
                // SAFETY: as above.
                unsafe {
                    let n = ffi::PQntuples(res);
                    for r in 0..n {
                        let len = ffi::PQgetlength(res, r, 0) as usize;
                        if len == 0 && ffi::PQgetisnull(res, r, 0) != 0 {
                            continue;
                        }
                        let p = ffi::PQgetvalue(res, r, 0).cast::<u8>();
                        let bytes = std::slice::from_raw_parts(p, len);
                        sum += i64::from(i32::from_be_bytes(bytes.try_into().unwrap()));
                    }
                }
                black_box(sum)
            })
        },
    );
    group.bench_function("C: PQgetvalue + ntohl", |b| {
        // SAFETY: the result is alive; column 0 is int4.
        b.iter(|| black_box(unsafe { bl_sum_int4(black_box(res), 0) }))
    });
    group.finish();

    let mut group = c.benchmark_group("text value");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("pqlib Row::get::<_, &str>(1)", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for row in &rows {
                let s: &str = row.get(1);
                sum += s.len() as i64 + i64::from(s.as_bytes()[0]);
            }
            black_box(sum)
        })
    });
    group.bench_function("Rust raw: PQgetvalue + PQgetlength + from_utf8", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            // SAFETY: the result is alive; indices in range.
            unsafe {
                let n = ffi::PQntuples(res);
                for r in 0..n {
                    let p = ffi::PQgetvalue(res, r, 1).cast::<u8>();
                    let len = ffi::PQgetlength(res, r, 1) as usize;
                    let s = std::str::from_utf8(std::slice::from_raw_parts(p, len)).unwrap();
                    sum += s.len() as i64 + i64::from(s.as_bytes()[0]);
                }
            }
            black_box(sum)
        })
    });
    group.bench_function("C: PQgetvalue + PQgetlength", |b| {
        // SAFETY: the result is alive; column 1 is text.
        b.iter(|| black_box(unsafe { bl_sum_text(black_box(res), 1) }))
    });
    group.finish();

    let mut group = c.benchmark_group("one libpq call");
    group.throughput(Throughput::Elements(CALLS as u64));
    group.bench_function("Rust -> PQntuples", |b| {
        b.iter(|| {
            let mut sum: c_int = 0;
            for _ in 0..CALLS {
                // SAFETY: the result is alive.
                sum = sum.wrapping_add(unsafe { ffi::PQntuples(black_box(res)) });
            }
            black_box(sum)
        })
    });
    group.bench_function("C -> PQntuples (loop in C)", |b| {
        // SAFETY: the result is alive.
        b.iter(|| black_box(unsafe { bl_ntuples_loop(black_box(res), CALLS as i64) }))
    });
    group.bench_function("pqlib Rows::len", |b| {
        b.iter(|| {
            let mut sum = 0usize;
            for _ in 0..CALLS {
                sum = sum.wrapping_add(black_box(&rows).len());
            }
            black_box(sum)
        })
    });
    group.finish();

    drop(rows);
    drop(raw);
    drop(conn);
    cluster.stop().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = values
}
criterion_main!(benches);
