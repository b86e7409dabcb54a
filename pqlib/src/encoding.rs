//! Which `client_encoding` a session may be in. pqlib sends and reads text as UTF-8 bytes:
//! `UTF8` keeps them as they are, and `SQL_ASCII` passes them through unconverted (the server
//! only checks them against its own encoding). Any other client encoding makes the server
//! convert, so every text value from then on would be corrupted both ways; such a session is
//! closed (see `Connection::check_encoding` and the async driver).

use std::ffi::c_int;

use foreign_types::ForeignTypeRef;
use pqlib_sys as ffi;

use crate::handle::PgConnRef;

/// Remembers libpq's numbers for the encodings that keep text intact, so that the check made
/// after every result is an integer comparison.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodingCheck {
    utf8: c_int,
    sql_ascii: Option<c_int>,
}

impl EncodingCheck {
    /// For a session whose client encoding is UTF8 now.
    pub(crate) fn new(conn: &PgConnRef) -> EncodingCheck {
        EncodingCheck {
            utf8: client_encoding(conn),
            sql_ascii: None,
        }
    }

    /// Whether the session's client encoding (as libpq last heard it from the server) keeps
    /// text intact.
    pub(crate) fn is_intact(&mut self, conn: &PgConnRef) -> bool {
        let encoding = client_encoding(conn);
        if encoding == self.utf8 || Some(encoding) == self.sql_ascii {
            return true;
        }
        if conn.parameter_status(c"client_encoding").as_deref() == Some("SQL_ASCII") {
            self.sql_ascii = Some(encoding);
            return true;
        }
        false
    }
}

fn client_encoding(conn: &PgConnRef) -> c_int {
    // SAFETY: the connection is alive for the borrow; this reads a field libpq keeps.
    unsafe { ffi::PQclientEncoding(conn.as_ptr()) }
}
