//! What a connection was made with and negotiated: the protocol version
//! ([`Connection::protocol_version`]) and the service it came from ([`Connection::service`]).

use std::ffi::c_int;
use std::fmt;

use pqlib_sys as ffi;

use crate::Connection;

/// A version of PostgreSQL's frontend/backend protocol: 3.0 (every server since 7.4), or 3.2
/// (PostgreSQL 18 and libpq 18: longer cancel keys). There is no 3.1.
///
/// Ordered by `major`, then `minor`. Shown as `3.2`, the form the `min_protocol_version` and
/// `max_protocol_version` connection options take
/// ([`Config::max_protocol_version`](crate::Config::max_protocol_version)).
///
/// ```
/// use pqlib::ProtocolVersion;
///
/// assert!(ProtocolVersion::V3_2 > ProtocolVersion::V3_0);
/// assert_eq!(ProtocolVersion::V3_2.to_string(), "3.2");
/// assert_eq!(ProtocolVersion::new(3, 0), ProtocolVersion::V3_0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// The major version: 3.
    pub major: u16,
    /// The minor version: 0 or 2.
    pub minor: u16,
}

impl ProtocolVersion {
    /// Protocol 3.0, what every server speaks and libpq 18 still asks for by default.
    ///
    /// ```
    /// assert_eq!(pqlib::ProtocolVersion::V3_0.minor, 0);
    /// ```
    pub const V3_0: ProtocolVersion = ProtocolVersion::new(3, 0);

    /// Protocol 3.2, which PostgreSQL 18 servers and libpq 18 speak when asked
    /// (`max_protocol_version=3.2` or `latest`).
    ///
    /// ```
    /// assert_eq!(pqlib::ProtocolVersion::V3_2.minor, 2);
    /// ```
    pub const V3_2: ProtocolVersion = ProtocolVersion::new(3, 2);

    /// The version `major.minor`.
    ///
    /// ```
    /// assert_eq!(pqlib::ProtocolVersion::new(3, 2).to_string(), "3.2");
    /// ```
    pub const fn new(major: u16, minor: u16) -> ProtocolVersion {
        ProtocolVersion { major, minor }
    }

    /// The version in libpq's numeric form, `major * 10000 + minor` (30002 for 3.2), as
    /// `PQfullProtocolVersion` returns it.
    ///
    /// ```
    /// assert_eq!(pqlib::ProtocolVersion::V3_2.number(), 30002);
    /// ```
    pub fn number(self) -> u32 {
        u32::from(self.major) * 10000 + u32::from(self.minor)
    }

    /// libpq's numeric form back (`None` for 0, libpq's "no connection", or a value out of
    /// range).
    fn from_number(number: c_int) -> Option<ProtocolVersion> {
        let number = u32::try_from(number).ok().filter(|&n| n > 0)?;
        Some(ProtocolVersion {
            major: u16::try_from(number / 10000).ok()?,
            minor: u16::try_from(number % 10000).ok()?,
        })
    }
}

impl fmt::Display for ProtocolVersion {
    /// `major.minor`, e.g. `3.2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Connection {
    /// The protocol version this connection negotiated with the server; `None` once the
    /// connection is closed.
    ///
    /// libpq 18 asks for 3.0 unless `max_protocol_version` says otherwise, and a server older
    /// than 18 answers 3.0 whatever is asked. With libpq 18 this is `PQfullProtocolVersion`;
    /// an older libpq speaks only 3.0 and reports just the major version
    /// (`PQprotocolVersion`), so this is then always 3.0.
    ///
    /// ```no_run
    /// use pqlib::ProtocolVersion;
    ///
    /// let conn = pqlib::Connection::connect("max_protocol_version=latest")?;
    /// if conn.protocol_version() == Some(ProtocolVersion::V3_2) {
    ///     println!("cancel keys are 256 bits long");
    /// }
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQfullProtocolVersion")]
    #[doc(alias = "PQprotocolVersion")]
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        #[cfg(libpq_18)]
        {
            // SAFETY: the connection is alive; the function only reads it.
            let number = unsafe { ffi::PQfullProtocolVersion(self.as_ptr()) };
            ProtocolVersion::from_number(number)
        }
        #[cfg(not(libpq_18))]
        {
            // SAFETY: the connection is alive; the function only reads it.
            let major = unsafe { ffi::PQprotocolVersion(self.as_ptr()) };
            ProtocolVersion::from_number(major.saturating_mul(10000))
        }
    }

    /// The connection service this connection was made with (`service=name`, or the
    /// `PGSERVICE` environment variable), whose entry in the service file supplied the
    /// parameters the connection string left out; `None` without one.
    ///
    /// libpq 18 records the service in the connection and pqlib reads it back
    /// (`PQconninfo`). An older libpq forgets it once it has read the service file, so there
    /// pqlib answers what it passed to libpq: the config's `service`, else `PGSERVICE` as it
    /// was when connecting. (The released libpq 18 has no `PQservice` function: neither its
    /// header nor its library has one.)
    ///
    /// ```no_run
    /// let conn = pqlib::Connection::connect("service=reporting")?;
    /// assert_eq!(conn.service().as_deref(), Some("reporting"));
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "PQservice")]
    #[doc(alias = "PQconninfo")]
    pub fn service(&self) -> Option<String> {
        #[cfg(libpq_18)]
        {
            // SAFETY: the connection is alive.
            unsafe { crate::handle::conninfo_option(self.as_ptr(), c"service") }
        }
        #[cfg(not(libpq_18))]
        {
            self.service.clone()
        }
    }
}

/// The service a connection made with `config` uses, as libpq decides it (the config's
/// `service`, else `PGSERVICE`): what [`Connection::service`] reports where libpq does not
/// keep it.
#[cfg(not(libpq_18))]
pub(crate) fn requested_service(config: &crate::Config) -> Option<String> {
    match config.get("service") {
        Some(service) => Some(service.to_owned()),
        None => std::env::var("PGSERVICE").ok(),
    }
    .filter(|service| !service.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_numbers_convert_both_ways() {
        assert_eq!(
            ProtocolVersion::from_number(30002),
            Some(ProtocolVersion::V3_2)
        );
        assert_eq!(
            ProtocolVersion::from_number(30000),
            Some(ProtocolVersion::V3_0)
        );
        assert_eq!(ProtocolVersion::from_number(0), None);
        assert_eq!(ProtocolVersion::from_number(-1), None);
        assert_eq!(ProtocolVersion::from_number(c_int::MAX), None);
        assert_eq!(ProtocolVersion::V3_0.number(), 30000);
        assert!(ProtocolVersion::new(4, 0) > ProtocolVersion::V3_2);
    }
}
