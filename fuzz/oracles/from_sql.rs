//! `FromSql` decoding through `Row::try_get`, on results built without a server:
//! `PQmakeEmptyPGresult` + `PQsetResultAttrs` (binary columns of built-in types) +
//! `PQsetvalue` with fuzzed bytes (or NULL), by pqlib's hidden `Rows::__single_column`
//! hook. Every conversion to every Rust type must return `Ok` or
//! `Err`, never panic or read out of bounds; indices out of range are `Err`.
//!
//! Input: byte 0 picks the column type, byte 1 the number of rows (1-4) and which are NULL,
//! the rest is split into one value per row.

use std::collections::HashMap;
use std::net::IpAddr;

use pqlib::Rows;
use pqlib::types::Type;

const TYPES: &[Type] = &[
    Type::BOOL,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::OID,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::TEXT,
    Type::VARCHAR,
    Type::BPCHAR,
    Type::NAME,
    Type::CHAR,
    Type::BYTEA,
    Type::JSON,
    Type::JSONB,
    Type::UUID,
    Type::DATE,
    Type::TIME,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::INET,
    Type::INT4_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::BYTEA_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::JSONB_ARRAY,
    Type::POINT,
    Type::BOX,
    Type::MACADDR,
    Type::UNKNOWN,
    Type::NUMERIC,
    Type::INTERVAL,
];

/// A one-column binary result with `values` as its rows (`None`: NULL).
fn result(ty: &Type, values: &[Option<&[u8]>]) -> Rows {
    Rows::__single_column(ty, values)
}

macro_rules! try_all {
    ($row:expr, $($t:ty),* $(,)?) => {
        $( let _ = $row.try_get::<_, $t>(0); let _ = $row.try_get::<_, Option<$t>>(0); )*
    };
}

/// The target's oracle: panics (or aborts) on a finding.
pub fn check(data: &[u8]) {
    let [kind, shape, rest @ ..] = data else {
        return;
    };
    let ty = &TYPES[usize::from(*kind) % TYPES.len()];
    let rows_count = usize::from(shape & 3) + 1;
    let chunk = rest.len().div_ceil(rows_count).max(1);
    let mut values: Vec<Option<&[u8]>> = rest.chunks(chunk).map(Some).collect();
    values.resize(rows_count, Some(&[]));
    for (i, value) in values.iter_mut().enumerate() {
        if shape & (0x10 << i) != 0 {
            *value = None;
        }
    }
    let rows = result(ty, &values);
    assert_eq!(rows.len(), rows_count);
    assert!(rows.get(rows_count).is_none());
    for row in &rows {
        assert_eq!(row.columns()[0].type_(), ty);
        try_all!(
            row, bool, i8, i16, i32, i64, u32, f32, f64, &str, String, &[u8], Vec<u8>,
            serde_json::Value, uuid::Uuid, chrono::NaiveDate, chrono::NaiveTime,
            chrono::NaiveDateTime, chrono::DateTime<chrono::Utc>, time::Date,
            time::PrimitiveDateTime, time::OffsetDateTime, IpAddr, std::time::SystemTime,
            HashMap<String, Option<String>>,
        );
        // Hostile array headers included: pqlib refuses one that claims more elements than
        // its bytes can hold before postgres-types reserves room for them
        // (regressions/from_sql-array-dims-oom).
        try_all!(
            row,
            Vec<i32>,
            Vec<i64>,
            Vec<String>,
            Vec<&str>,
            Vec<Vec<u8>>,
            Vec<f64>,
            Vec<Option<i32>>,
            Vec<serde_json::Value>,
        );
        let _ = row.try_get::<_, i32>(1);
        let _ = row.try_get::<_, i32>("missing");
        let _ = row.raw(0);
        assert!(row.raw(1).is_err());
    }
}
