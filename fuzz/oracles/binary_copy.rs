//! Binary COPY decoding (`COPY … TO STDOUT (FORMAT binary)`) of arbitrary bytes, through
//! pqlib's hidden `binary_copy::__decode` hook: the same parser `BinaryCopyOutIter` runs over
//! libpq's buffers, here over a reader that hands the data out in chunks of a fuzzed size
//! (rows split anywhere). Each row must either decode or be an error; reading every value
//! as several Rust types never panics.
//!
//! Arrays included: `Vec<T>: FromSql` (postgres-types) reserves as many elements as the array
//! header claims, so 100 bytes could ask for 7 GB (regressions/binary_copy-array-dims-oom);
//! pqlib checks the header against the value's size first.
//!
//! Input: byte 0 the chunk size (1-256), byte 1 the number of columns (0-7), bytes 2.. the
//! column types (one byte each), then the COPY data. Half the inputs get a valid header
//! prepended, so the fuzzer reaches the rows quickly.

use std::io::{BufRead, Read};

use pqlib::types::Type;

const TYPES: &[Type] = &[
    Type::INT4,
    Type::INT8,
    Type::TEXT,
    Type::BYTEA,
    Type::BOOL,
    Type::FLOAT8,
    Type::INT4_ARRAY,
    Type::JSONB,
];

/// Hands out `data` at most `size` bytes at a time, as libpq's buffers would.
struct Chunks<'a> {
    data: &'a [u8],
    size: usize,
    pos: usize,
}

impl Read for Chunks<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.len().min(out.len());
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Chunks<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let end = (self.pos + self.size).min(self.data.len());
        Ok(&self.data[self.pos..end])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.data.len());
    }
}

const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The target's oracle: panics (or aborts) on a finding.
pub fn check(data: &[u8]) {
    let [size, columns, rest @ ..] = data else {
        return;
    };
    let columns = usize::from(columns & 7);
    if rest.len() < columns {
        return;
    }
    let (type_bytes, body) = rest.split_at(columns);
    let types: Vec<Type> = type_bytes
        .iter()
        .map(|b| TYPES[usize::from(*b) % TYPES.len()].clone())
        .collect();
    let mut input = Vec::new();
    if size & 0x80 != 0 {
        input.extend_from_slice(HEADER);
    }
    input.extend_from_slice(body);
    let reader = Chunks {
        data: &input,
        size: usize::from(size & 0x7f) + 1,
        pos: 0,
    };
    for row in pqlib::binary_copy::__decode(reader, &types).take(10_000) {
        let Ok(row) = row else { continue };
        assert_eq!(row.len(), types.len());
        for i in 0..=row.len() {
            let _ = row.try_get::<Option<i32>>(i);
            let _ = row.try_get::<Option<i64>>(i);
            let _ = row.try_get::<Option<&str>>(i);
            let _ = row.try_get::<Option<&[u8]>>(i);
            let _ = row.try_get::<Option<bool>>(i);
            let _ = row.try_get::<Option<f64>>(i);
            let _ = row.try_get::<Option<serde_json::Value>>(i);
            let _ = row.try_get::<Option<Vec<i32>>>(i);
            let _ = row.try_get::<Option<Vec<Option<i32>>>>(i);
            let _ = row.try_get::<Option<Vec<String>>>(i);
        }
        assert!(row.try_get::<i32>(row.len()).is_err());
    }
}
