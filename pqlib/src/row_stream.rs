//! Rows as the server sends them, without holding the whole result in memory: libpq's
//! chunked-rows mode (libpq 17+) or single-row mode (before).

use std::fmt;
use std::sync::Arc;

use foreign_types::ForeignType;
use pqlib_sys as ffi;

use crate::Connection;
use crate::connection::{Planned, check_param_count};
use crate::error::{Error, Result};
use crate::handle::PgResult;
use crate::params::EncodedParams;
use crate::row::{Column, Row, Rows};
use crate::statement::ToStatement;
use crate::types::{BorrowToSql, ToSql};

/// How many rows libpq 17+ collects into one result in chunked mode: big enough that the
/// per-result overhead vanishes, small enough (~100 KiB for 100-byte rows) to stay in cache.
pub const STREAM_CHUNK_ROWS: usize = 1000;

impl Connection {
    /// Runs a statement and streams its rows: each row is available as soon as the server has
    /// sent it, and memory holds one chunk of rows at a time rather than the whole result.
    ///
    /// Parameters are an iterator (as in the `postgres` crate), e.g. a `Vec` of boxed values
    /// built at run time. Rows borrow the stream's current chunk, so they come from a lending
    /// [`RowStream::next_row`] rather than an `Iterator`; [`RowStream::next_chunk`] hands out
    /// whole chunks as owned [`Rows`] instead.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut stream = conn.query_raw("SELECT g, md5(g::text) FROM generate_series(1, $1) g", [&10_000_000i32])?;
    /// let mut total = 0i64;
    /// while let Some(row) = stream.next_row() {
    ///     let row = row?;
    ///     total += i64::from(row.get::<_, i32>(0));
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQsendQueryPrepared")]
    #[doc(alias = "PQsetChunkedRowsMode")]
    #[doc(alias = "PQsetSingleRowMode")]
    pub fn query_raw<T, P, I>(&mut self, statement: &T, params: I) -> Result<RowStream<'_>>
    where
        T: ?Sized + ToStatement,
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        self.before_query()?;
        let params: Vec<P> = params.into_iter().collect();
        let values = || params.iter().map(|p| p.borrow_to_sql() as &dyn ToSql);
        let (encoded, columns, unnamed) = match self.plan(statement)? {
            Planned::Prepared(statement) => {
                self.statements.check_use(&statement, params.len())?;
                let encoded = EncodedParams::from_iter(values(), statement.params())?;
                (encoded, statement.columns_arc(), Err(statement))
            }
            Planned::Unnamed { sql, described } => {
                check_param_count(&described.params, params.len())?;
                let mut encoded = EncodedParams::from_iter(values(), &described.params)?;
                encoded.set_types(&described.params);
                (encoded, described.columns, Ok(sql))
            }
        };
        let conn = self.conn.as_ptr();
        // SAFETY: the connection is alive, idle and ours for the call.
        let sent = unsafe {
            match &unnamed {
                Ok(sql) => encoded.send_params(conn, sql),
                Err(statement) => encoded.send_prepared(conn, statement.c_name()),
            }
        };
        if !sent {
            return Err(self.connection_error());
        }
        // Must directly follow the send, before any result is read.
        #[cfg(libpq_17)]
        // SAFETY: the connection is alive with a query just sent.
        let streaming = unsafe { ffi::PQsetChunkedRowsMode(conn, STREAM_CHUNK_ROWS as i32) };
        #[cfg(not(libpq_17))]
        // SAFETY: the connection is alive with a query just sent.
        let streaming = unsafe { ffi::PQsetSingleRowMode(conn) };
        let mut stream = RowStream {
            conn: self,
            columns,
            unchecked: unnamed.ok().map(|sql| sql.to_string_lossy().into_owned()),
            chunk: None,
            position: 0,
            rows_affected: None,
            chunk_tag: None,
            done: false,
        };
        if streaming != 1 {
            stream.drain();
            return Err(Error::client("libpq refused to stream this query's rows"));
        }
        Ok(stream)
    }
}

/// The rows of [`Connection::query_raw`], arriving as the server sends them.
///
/// Dropping the stream before the end reads and discards the rest of the result, so that the
/// connection is ready for the next statement; use `LIMIT` (or a cursor) rather than dropping
/// a stream of a huge result early.
pub struct RowStream<'c> {
    conn: &'c mut Connection,
    columns: Arc<[Column]>,
    /// SQL text run as the unnamed statement with the columns it was described with: its
    /// first rows are checked against them (DDL may have changed them since).
    unchecked: Option<String>,
    chunk: Option<Rows>,
    /// The next row of `chunk` to hand out.
    position: usize,
    rows_affected: Option<u64>,
    /// The row count of a chunk that carried the command tag (libpq 17+ chunked mode).
    chunk_tag: Option<u64>,
    done: bool,
}

impl RowStream<'_> {
    /// The next row, waiting for the server if the current chunk is used up; `None` at the end.
    /// An error (from the server, mid-stream) ends the stream and leaves the connection ready
    /// for the next statement.
    #[doc(alias = "PQgetResult")]
    pub fn next_row(&mut self) -> Option<Result<Row<'_>>> {
        let has_row = |s: &Self| s.chunk.as_ref().is_some_and(|c| s.position < c.len());
        while !has_row(self) {
            match self.fetch()? {
                Ok(chunk) => {
                    self.chunk = Some(chunk);
                    self.position = 0;
                }
                Err(e) => return Some(Err(e)),
            }
        }
        self.position += 1;
        let chunk = self.chunk.as_ref()?;
        chunk.get(self.position - 1).map(Ok)
    }

    /// The rest of the current chunk (or the next chunk) as an owned [`Rows`]: the fastest way
    /// through a large result, one libpq result at a time.
    ///
    /// ```no_run
    /// # let mut conn = pqlib::Connection::connect("").unwrap();
    /// let mut stream = conn.query_raw("SELECT generate_series(1, 1000000)", std::iter::empty::<i32>())?;
    /// while let Some(chunk) = stream.next_chunk() {
    ///     for row in &chunk? {
    ///         let _n: i32 = row.get(0);
    ///     }
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQgetResult")]
    pub fn next_chunk(&mut self) -> Option<Result<Rows>> {
        if let Some(chunk) = self.chunk.take() {
            if self.position < chunk.len() {
                if self.position == 0 {
                    return Some(Ok(chunk));
                }
                // A partly read chunk: hand out the rest row by row instead.
                self.chunk = Some(chunk);
                return Some(Err(Error::bad_input(
                    "next_chunk after next_row mid-chunk: read the chunk's remaining rows with next_row",
                )));
            }
        }
        self.fetch()
    }

    /// The number of rows the statement returned or affected, once the stream has ended.
    #[doc(alias = "PQcmdTuples")]
    pub fn rows_affected(&self) -> Option<u64> {
        self.rows_affected
    }

    /// The result's columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The next chunk with rows, `None` at the end.
    fn fetch(&mut self) -> Option<Result<Rows>> {
        loop {
            if self.done {
                return None;
            }
            // SAFETY: the connection is alive and streaming this statement's results.
            let ptr = unsafe { ffi::PQgetResult(self.conn.conn.as_ptr()) };
            if ptr.is_null() {
                self.done = true;
                return None;
            }
            let result = match self.conn.check(ptr) {
                Ok(result) => result,
                Err(e) => {
                    self.drain();
                    return Some(Err(e));
                }
            };
            if result.ntuples() == 0 {
                // The end (TUPLES_OK with zero rows; COMMAND_OK or EMPTY_QUERY for a statement
                // without rows): the command's status, unless the last chunk carried it.
                self.rows_affected = match self.chunk_tag {
                    Some(rows) if !result.has_command_status() => Some(rows),
                    _ => Some(result.rows_affected()),
                };
                continue;
            }
            if let Some(sql) = self.unchecked.take() {
                if !result.has_columns(&self.columns) {
                    self.conn.statements.unnamed.forget_description(&sql);
                    self.drain();
                    return Some(Err(Error::client(format!(
                        "the rows of {sql:?} have other columns than when it was described \
                         (DDL since?); it is described again on its next run"
                    ))));
                }
            }
            if result.has_command_status() {
                // libpq 17+'s chunked mode: the tag comes with the last chunk of rows.
                self.chunk_tag = Some(result.rows_affected());
            }
            return Some(Ok(self.rows(result)));
        }
    }

    fn rows(&self, result: PgResult) -> Rows {
        Rows::new(result, self.columns.clone(), self.conn.notices.clone())
    }

    /// Reads and frees whatever is left of the result.
    fn drain(&mut self) {
        while !self.done {
            // SAFETY: the connection is alive; results are freed by PgResult.
            match PgResult::from_returned(unsafe { ffi::PQgetResult(self.conn.conn.as_ptr()) }) {
                Some(result) => drop(result),
                None => self.done = true,
            }
        }
        self.conn.notices.resume_panic();
    }
}

impl Drop for RowStream<'_> {
    fn drop(&mut self) {
        self.drain();
    }
}

impl fmt::Debug for RowStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowStream")
            .field("columns", &self.columns)
            .field("done", &self.done)
            .finish()
    }
}
