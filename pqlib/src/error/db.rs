//! The server's error report, read field by field from a `PGresult`.

use std::error::Error as StdError;
use std::fmt;

use super::SqlState;
use crate::handle::PgResultRef;

/// How serious a server message is (the non-localized `PG_DIAG_SEVERITY_NONLOCALIZED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// `PANIC`
    Panic,
    /// `FATAL`
    Fatal,
    /// `ERROR`
    Error,
    /// `WARNING`
    Warning,
    /// `NOTICE`
    Notice,
    /// `DEBUG`
    Debug,
    /// `INFO`
    Info,
    /// `LOG`
    Log,
}

impl Severity {
    fn parse(text: &str) -> Option<Severity> {
        Some(match text {
            "PANIC" => Severity::Panic,
            "FATAL" => Severity::Fatal,
            "ERROR" => Severity::Error,
            "WARNING" => Severity::Warning,
            "NOTICE" => Severity::Notice,
            "DEBUG" => Severity::Debug,
            "INFO" => Severity::Info,
            "LOG" => Severity::Log,
            _ => return None,
        })
    }
}

/// Where in the query an error was detected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorPosition {
    /// A 1-based character offset into the query the client sent.
    Original(u32),
    /// A position in a query generated internally by the server (e.g. in a PL/pgSQL function).
    Internal {
        /// The 1-based character offset into `query`.
        position: u32,
        /// The internally generated query.
        query: String,
    },
}

/// An error or notice reported by the server, with every field libpq exposes
/// (`PQresultErrorField`). Text the server sent in another encoding than UTF-8 is decoded
/// lossily.
///
/// ```no_run
/// # let mut conn = pqlib::Connection::connect("dbname=postgres").unwrap();
/// let e = conn.batch_execute("SELECT * FROM no_such_table").unwrap_err();
/// let db = e.as_db_error().unwrap();
/// assert_eq!(db.code(), &pqlib::error::SqlState::UNDEFINED_TABLE);
/// println!("{}: {} at {:?}", db.severity(), db.message(), db.position());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DbError {
    severity: String,
    parsed_severity: Option<Severity>,
    code: SqlState,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
    position: Option<ErrorPosition>,
    where_: Option<String>,
    schema: Option<String>,
    table: Option<String>,
    column: Option<String>,
    datatype: Option<String>,
    constraint: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    routine: Option<String>,
}

impl DbError {
    /// Reads the fields of an error or notice result.
    pub(crate) fn from_result(result: &PgResultRef) -> DbError {
        use pqlib_sys as ffi;
        let field = |code: u8| result.error_field(code);
        let number = |code: u8| field(code).and_then(|s| s.trim().parse::<u32>().ok());
        let position = match number(ffi::PG_DIAG_STATEMENT_POSITION) {
            Some(position) => Some(ErrorPosition::Original(position)),
            None => {
                number(ffi::PG_DIAG_INTERNAL_POSITION).map(|position| ErrorPosition::Internal {
                    position,
                    query: field(ffi::PG_DIAG_INTERNAL_QUERY).unwrap_or_default(),
                })
            }
        };
        let severity = field(ffi::PG_DIAG_SEVERITY).unwrap_or_default();
        let parsed_severity = field(ffi::PG_DIAG_SEVERITY_NONLOCALIZED)
            .as_deref()
            .or(Some(&severity))
            .and_then(Severity::parse);
        let message = field(ffi::PG_DIAG_MESSAGE_PRIMARY)
            // A result made by libpq itself (not the server) has no fields, only a message.
            .or_else(|| result.error_message())
            .unwrap_or_default();
        DbError {
            severity,
            parsed_severity,
            code: SqlState::from_code(&field(ffi::PG_DIAG_SQLSTATE).unwrap_or_default()),
            message,
            detail: field(ffi::PG_DIAG_MESSAGE_DETAIL),
            hint: field(ffi::PG_DIAG_MESSAGE_HINT),
            position,
            where_: field(ffi::PG_DIAG_CONTEXT),
            schema: field(ffi::PG_DIAG_SCHEMA_NAME),
            table: field(ffi::PG_DIAG_TABLE_NAME),
            column: field(ffi::PG_DIAG_COLUMN_NAME),
            datatype: field(ffi::PG_DIAG_DATATYPE_NAME),
            constraint: field(ffi::PG_DIAG_CONSTRAINT_NAME),
            file: field(ffi::PG_DIAG_SOURCE_FILE),
            line: number(ffi::PG_DIAG_SOURCE_LINE),
            routine: field(ffi::PG_DIAG_SOURCE_FUNCTION),
        }
    }

    /// The severity, possibly localized (`ERROR`, `FEHLER`, …).
    pub fn severity(&self) -> &str {
        &self.severity
    }

    /// The severity as an enum, from the never-localized field.
    pub fn parsed_severity(&self) -> Option<Severity> {
        self.parsed_severity
    }

    /// The SQLSTATE code.
    pub fn code(&self) -> &SqlState {
        &self.code
    }

    /// The primary message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An optional secondary message with more detail.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// An optional suggestion what to do about it.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Where in the query the error was detected.
    pub fn position(&self) -> Option<&ErrorPosition> {
        self.position.as_ref()
    }

    /// The context: a call stack of PL functions or internal queries, one per line.
    pub fn where_(&self) -> Option<&str> {
        self.where_.as_deref()
    }

    /// The schema of the object the error is about.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The table the error is about.
    pub fn table(&self) -> Option<&str> {
        self.table.as_deref()
    }

    /// The column the error is about.
    pub fn column(&self) -> Option<&str> {
        self.column.as_deref()
    }

    /// The data type the error is about.
    pub fn datatype(&self) -> Option<&str> {
        self.datatype.as_deref()
    }

    /// The constraint the error is about.
    pub fn constraint(&self) -> Option<&str> {
        self.constraint.as_deref()
    }

    /// The server source file that reported the error.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The line in [`DbError::file`].
    pub fn line(&self) -> Option<u32> {
        self.line
    }

    /// The server source function that reported the error.
    pub fn routine(&self) -> Option<&str> {
        self.routine.as_deref()
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.message.trim_end())?;
        if !self.code.code().is_empty() {
            write!(f, " (SQLSTATE {})", self.code.code())?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "\nDETAIL: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nHINT: {hint}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DbError");
        d.field("severity", &self.severity)
            .field("code", &self.code.code())
            .field("message", &self.message);
        let optional = [
            ("detail", &self.detail),
            ("hint", &self.hint),
            ("where_", &self.where_),
            ("schema", &self.schema),
            ("table", &self.table),
            ("column", &self.column),
            ("datatype", &self.datatype),
            ("constraint", &self.constraint),
            ("file", &self.file),
            ("routine", &self.routine),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                d.field(name, value);
            }
        }
        if let Some(position) = &self.position {
            d.field("position", position);
        }
        if let Some(line) = self.line {
            d.field("line", &line);
        }
        d.finish()
    }
}

impl StdError for DbError {}
