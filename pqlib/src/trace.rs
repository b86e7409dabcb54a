//! Events for `tracing` subscribers (feature `tracing`): connections, statements, COPY and
//! pipelines, under targets `pqlib::connect`, `pqlib::query`, `pqlib::copy`,
//! `pqlib::pipeline`. SQL text is recorded at debug level; parameter values never are.
//! Without the feature every function here compiles to nothing. With it, and no `tracing`
//! subscriber installed, the events reach the `log` crate instead (tracing's `log` feature).

/// A statement being run: a debug-level span around it, if tracing is on.
#[must_use]
pub(crate) struct StatementSpan {
    #[cfg(feature = "tracing")]
    _span: tracing::span::EnteredSpan,
}

/// Enters a span for running `sql` (`kind`: "query", "execute", "prepare", …).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn statement(kind: &'static str, sql: &str) -> StatementSpan {
    StatementSpan {
        #[cfg(feature = "tracing")]
        _span: tracing::debug_span!(target: "pqlib::query", "statement", kind, sql).entered(),
    }
}

/// A statement finished (inside its span).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn statement_done(rows: usize, error: Option<&crate::Error>) {
    #[cfg(feature = "tracing")]
    match error {
        None => tracing::debug!(target: "pqlib::query", rows, "done"),
        Some(e) => tracing::debug!(target: "pqlib::query", error = %e, "failed"),
    }
}

/// A connection attempt ended; `host`/`port`/`dbname` as libpq reports them (never the
/// password).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn connected(host: &str, port: &str, dbname: &str, result: Result<u32, &crate::Error>) {
    #[cfg(feature = "tracing")]
    match result {
        Ok(backend_pid) => {
            tracing::info!(target: "pqlib::connect", host, port, dbname, backend_pid, "connected")
        }
        Err(e) => tracing::warn!(target: "pqlib::connect", error = %e, "connection failed"),
    }
}

/// A COPY started (`direction`: "in" or "out") or ended.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn copy(direction: &'static str, sql: &str) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "pqlib::copy", direction, sql, "COPY started");
}

/// A COPY ended with this many rows, or an error.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn copy_done(result: Result<u64, &crate::Error>) {
    #[cfg(feature = "tracing")]
    match result {
        Ok(rows) => tracing::debug!(target: "pqlib::copy", rows, "COPY finished"),
        Err(e) => tracing::debug!(target: "pqlib::copy", error = %e, "COPY failed"),
    }
}

/// A notice with no handler: to `tracing` with the feature, else to the `log` crate.
pub(crate) fn notice(notice: &crate::error::DbError) {
    use crate::error::Severity;
    #[cfg(feature = "tracing")]
    match notice.parsed_severity() {
        Some(Severity::Warning) => tracing::warn!(target: "pqlib::notice", "{notice}"),
        Some(Severity::Notice | Severity::Info) => {
            tracing::info!(target: "pqlib::notice", "{notice}")
        }
        _ => tracing::debug!(target: "pqlib::notice", "{notice}"),
    }
    #[cfg(not(feature = "tracing"))]
    {
        let level = match notice.parsed_severity() {
            Some(Severity::Warning) => log::Level::Warn,
            Some(Severity::Notice | Severity::Info) => log::Level::Info,
            _ => log::Level::Debug,
        };
        log::log!(target: "pqlib::notice", level, "{notice}");
    }
}
