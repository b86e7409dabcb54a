//! When SQL text passed to `query`/`execute` becomes a named prepared statement
//! ([`PreparePolicy`]), and what is remembered about text that runs as the unnamed statement
//! instead: the policy that makes pqlib work behind a connection pooler in transaction mode.
//!
//! A pooler in transaction mode (PgBouncer's `pool_mode = transaction`) hands the client's
//! next transaction, or next statement outside one, to whichever server connection is free.
//! A named statement prepared on one server connection does not exist on the others
//! (`prepared statement "pqlib_3" does not exist`). The unnamed statement is safe when it is
//! parsed, bound and executed within one sync segment, which the pooler never splits:
//! `PQexecParams`/`PQsendQueryParams` with explicit parameter types do exactly that.
//!
//! The types come from describing the text once per connection (Parse and Describe of the
//! unnamed statement, then Sync: a segment of its own, so it needs no particular server
//! connection either) and are remembered here. A run then costs one round trip, like a
//! cached named statement, plus the server's parse and plan of the text.

use std::collections::HashMap;
use std::sync::Arc;

use crate::row::Column;
use crate::types::Type;

/// When SQL text passed to `query`, `execute` and friends is prepared as a named statement.
///
/// Set it with [`Config::prepare_policy`](crate::Config::prepare_policy); it applies to
/// [`Connection`](crate::Connection), [`pqlib::tokio::Client`](crate::tokio) and the pools
/// built from the config. It is not a libpq connection option, so it cannot be given in a
/// connection string.
///
/// | policy | first run of a text | later runs | behind a transaction pooler |
/// |---|---|---|---|
/// | [`Always`](PreparePolicy::Always) (default) | Parse + Describe, then Bind/Execute of a named statement | Bind/Execute | fails (`prepared statement … does not exist`) |
/// | [`AfterRuns(n)`](PreparePolicy::AfterRuns) | as `Never` | as `Never` for the first `n` runs, then as `Always` | fails once a text is prepared |
/// | [`Never`](PreparePolicy::Never) | Describe of the unnamed statement, then Parse/Bind/Execute with types | Parse/Bind/Execute with types | works |
///
/// An explicit [`prepare`](crate::Connection::prepare) always makes a named statement; that
/// is safe with session pooling, or with PgBouncer 1.21+ and `max_prepared_statements` set
/// (PgBouncer then re-prepares the statement on whichever server connection runs it).
///
/// ```no_run
/// use pqlib::PreparePolicy;
///
/// let mut config: pqlib::Config = "host=127.0.0.1 port=6432 dbname=app".parse()?;
/// config.prepare_policy(PreparePolicy::Never); // PgBouncer in transaction mode
/// let mut conn = config.connect()?;
/// let n: i64 = conn.query_one("SELECT $1::int8 * 2", &[&21i64])?.get(0);
/// assert_eq!(n, 42);
/// # Ok::<(), pqlib::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PreparePolicy {
    /// Prepare every SQL text the first time it runs and cache the statement (up to
    /// [`STATEMENT_CACHE_CAPACITY`](crate::STATEMENT_CACHE_CAPACITY) per connection, least
    /// recently used evicted). The fastest when the server connection is always the same.
    #[default]
    Always,
    /// Run a text as the unnamed statement for its first `n` runs, then prepare and cache it
    /// (psycopg's `prepare_threshold`): one-off statements never occupy the server's memory.
    /// `AfterRuns(0)` is `Always`.
    AfterRuns(u32),
    /// Never prepare SQL text: every run uses the unnamed statement. For PgBouncer in
    /// transaction or statement mode (before 1.21, or without `max_prepared_statements`)
    /// and other poolers that move a session between server connections.
    Never,
}

/// How one run of SQL text goes.
#[derive(Debug)]
pub(crate) enum Plan {
    /// As this cached named statement.
    Cached(crate::Statement),
    /// Prepare it as a named statement and cache it.
    Prepare,
    /// Run it as the unnamed statement as described, or describe it first (`None`).
    Unnamed(Option<Described>),
}

/// What describing SQL text as the unnamed statement told: its parameter types, and its
/// result columns (needed up front by row streams; other runs take their columns from
/// their own result, and a stream checks that its first rows match).
#[derive(Clone, Debug)]
pub(crate) struct Described {
    pub(crate) params: Arc<[Type]>,
    pub(crate) columns: Arc<[Column]>,
}

/// How many texts are remembered: more than the statement cache, since an entry is small
/// (its parameter types and a count) and holds nothing on the server.
pub(crate) const UNNAMED_TEXTS_CAPACITY: usize = 1024;

/// SQL texts that run as the unnamed statement: their parameter types once described, and
/// how often each has run (for [`PreparePolicy::AfterRuns`]). Least recently used texts are
/// forgotten first.
#[derive(Default)]
pub(crate) struct UnnamedTexts {
    by_sql: HashMap<String, Entry>,
    clock: u64,
}

struct Entry {
    described: Option<Described>,
    runs: u32,
    last_used: u64,
}

impl UnnamedTexts {
    /// The plan for one run of `sql` (not in the statement cache) under `policy`, counted as
    /// a run. With `promote` false a text past [`AfterRuns`](PreparePolicy::AfterRuns)'
    /// threshold still runs unnamed (inside a pipeline, where preparing would wait for the
    /// server, and fail in a segment an earlier error aborted); a later run outside one
    /// prepares it.
    pub(crate) fn plan(&mut self, policy: PreparePolicy, sql: &str, promote: bool) -> Plan {
        let threshold = match policy {
            PreparePolicy::Always | PreparePolicy::AfterRuns(0) => return Plan::Prepare,
            PreparePolicy::AfterRuns(n) if promote => Some(n),
            PreparePolicy::AfterRuns(_) | PreparePolicy::Never => None,
        };
        self.clock += 1;
        let clock = self.clock;
        if !self.by_sql.contains_key(sql) {
            self.make_room();
            self.by_sql.insert(
                sql.to_owned(),
                Entry {
                    described: None,
                    runs: 0,
                    last_used: clock,
                },
            );
        }
        let Some(entry) = self.by_sql.get_mut(sql) else {
            return Plan::Unnamed(None);
        };
        if threshold.is_some_and(|n| entry.runs >= n) {
            // Kept until the statement is cached (`prepared`): if preparing fails (in a
            // failed transaction, say), the text still runs unnamed in a pipeline.
            return Plan::Prepare;
        }
        entry.runs = entry.runs.saturating_add(1);
        entry.last_used = clock;
        Plan::Unnamed(entry.described.clone())
    }

    /// Remembers what the server described for `sql`.
    pub(crate) fn described(&mut self, sql: &str, described: Described) {
        if let Some(entry) = self.by_sql.get_mut(sql) {
            entry.described = Some(described);
        }
    }

    /// `sql` is now a cached named statement.
    pub(crate) fn prepared(&mut self, sql: &str) {
        self.by_sql.remove(sql);
    }

    /// Forgets the description of `sql` (a run failed, or a stream's rows did not match:
    /// the next run describes it again, in case DDL changed it).
    pub(crate) fn forget_description(&mut self, sql: &str) {
        if let Some(entry) = self.by_sql.get_mut(sql) {
            entry.described = None;
        }
    }

    fn make_room(&mut self) {
        if self.by_sql.len() < UNNAMED_TEXTS_CAPACITY {
            return;
        }
        let oldest = self
            .by_sql
            .iter()
            .min_by_key(|(_, entry)| entry.last_used)
            .map(|(sql, _)| sql.clone());
        if let Some(oldest) = oldest {
            self.by_sql.remove(&oldest);
        }
    }
}

/// Whether a run's error may come from a description that DDL made stale (a parameter whose
/// type changed: `42804 datatype_mismatch`, `42883 undefined_function`, … : class 42), so
/// that the next run describes the text again. Other errors (a division by zero, a
/// constraint) say nothing about the description and keep it.
pub(crate) fn may_be_stale(error: &crate::Error) -> bool {
    error
        .code()
        .is_some_and(|code| code.code().starts_with("42"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Described {
        Described {
            params: Arc::from([Type::INT4]),
            columns: Arc::from([]),
        }
    }

    #[test]
    fn always_prepares() {
        let mut texts = UnnamedTexts::default();
        assert!(matches!(
            texts.plan(PreparePolicy::Always, "SELECT 1", true),
            Plan::Prepare
        ));
        assert!(matches!(
            texts.plan(PreparePolicy::AfterRuns(0), "SELECT 1", true),
            Plan::Prepare
        ));
        assert!(texts.by_sql.is_empty());
    }

    #[test]
    fn never_describes_once_then_reuses_the_types() {
        let mut texts = UnnamedTexts::default();
        let sql = "SELECT $1::int4";
        assert!(matches!(
            texts.plan(PreparePolicy::Never, sql, true),
            Plan::Unnamed(None)
        ));
        texts.described(sql, types());
        for _ in 0..10 {
            match texts.plan(PreparePolicy::Never, sql, true) {
                Plan::Unnamed(Some(described)) => assert_eq!(&*described.params, &[Type::INT4]),
                other => panic!("{other:?}"),
            }
        }
        texts.forget_description(sql);
        assert!(matches!(
            texts.plan(PreparePolicy::Never, sql, true),
            Plan::Unnamed(None)
        ));
    }

    #[test]
    fn after_runs_prepares_on_the_run_after_the_threshold() {
        let mut texts = UnnamedTexts::default();
        let sql = "SELECT $1::int4";
        for run in 0..3 {
            assert!(
                matches!(
                    texts.plan(PreparePolicy::AfterRuns(3), sql, true),
                    Plan::Unnamed(_)
                ),
                "run {run}"
            );
            texts.described(sql, types());
        }
        // Not inside a pipeline: unnamed still, as described.
        assert!(matches!(
            texts.plan(PreparePolicy::AfterRuns(3), sql, false),
            Plan::Unnamed(Some(_))
        ));
        assert!(matches!(
            texts.plan(PreparePolicy::AfterRuns(3), sql, true),
            Plan::Prepare
        ));
        // Until the statement is cached, the description stays (a prepare that failed).
        assert!(matches!(
            texts.plan(PreparePolicy::AfterRuns(3), sql, false),
            Plan::Unnamed(Some(_))
        ));
        // Prepared texts live in the statement cache; this one is forgotten here.
        texts.prepared(sql);
        assert!(texts.by_sql.is_empty());
    }

    #[test]
    fn the_least_recently_used_text_is_forgotten() {
        let mut texts = UnnamedTexts::default();
        for i in 0..UNNAMED_TEXTS_CAPACITY {
            texts.plan(PreparePolicy::Never, &format!("SELECT {i}"), true);
        }
        texts.plan(PreparePolicy::Never, "SELECT 0", true);
        texts.plan(PreparePolicy::Never, "SELECT 'new'", true);
        assert_eq!(texts.by_sql.len(), UNNAMED_TEXTS_CAPACITY);
        assert!(texts.by_sql.contains_key("SELECT 0"));
        assert!(!texts.by_sql.contains_key("SELECT 1"));
        assert!(texts.by_sql.contains_key("SELECT 'new'"));
    }
}
