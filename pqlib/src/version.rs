//! Which libpq this program runs with.

use std::fmt;

/// A libpq release, e.g. 18.6.
///
/// ```
/// let v = pqlib::version();
/// assert!(v.major >= 14, "pqlib needs libpq 14 or newer");
/// println!("linked with libpq {v} ({})", v.number());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// The major release: 14, 15, …
    pub major: u32,
    /// The minor (bug-fix) release within the major one.
    pub minor: u32,
}

impl Version {
    /// The version in libpq's numeric form, `major * 10000 + minor` (180006 for 18.6).
    pub fn number(self) -> u32 {
        self.major * 10000 + self.minor
    }

    /// The inverse of [`Version::number`].
    ///
    /// ```
    /// assert_eq!(pqlib::Version::from_number(150018).to_string(), "15.18");
    /// ```
    pub fn from_number(number: u32) -> Version {
        Version {
            major: number / 10000,
            minor: number % 10000,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version of the libpq this program is running with.
///
/// For a shared system libpq this asks the loaded library (`PQlibVersion`), which may be newer
/// than the headers pqlib was built against. For the vendored build it reports the version
/// read from the bundled headers at build time, because pq-src 0.3.14's `PQlibVersion()`
/// returns 180600 for libpq 18.6.
///
/// ```
/// println!("libpq {}", pqlib::version());
/// ```
#[doc(alias = "PQlibVersion")]
pub fn version() -> Version {
    if cfg!(pqlib_vendored) {
        return Version::from_number(pqlib_sys::LIBPQ_HEADER_VERSION_NUMBER);
    }
    // SAFETY: PQlibVersion has no preconditions and only returns a constant.
    let number = unsafe { pqlib_sys::PQlibVersion() };
    Version::from_number(u32::try_from(number).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_version_matches_the_linked_library() {
        let v = version();
        if cfg!(pqlib_vendored) {
            // pq-src 0.3.14 bundles libpq 18.6; its PQlibVersion() would say 18.600.
            assert_eq!(
                v,
                Version {
                    major: 18,
                    minor: 6
                }
            );
        } else {
            // A shared libpq is at least as new as the headers we compiled against.
            let headers = Version::from_number(pqlib_sys::LIBPQ_HEADER_VERSION_NUMBER);
            assert!(
                v >= headers,
                "runtime libpq {v} is older than its headers {headers}"
            );
        }
    }

    #[test]
    fn version_cfgs_follow_the_major_version() {
        let major = Version::from_number(pqlib_sys::LIBPQ_HEADER_VERSION_NUMBER).major;
        assert_eq!(cfg!(libpq_15), major >= 15);
        assert_eq!(cfg!(libpq_16), major >= 16);
        assert_eq!(cfg!(libpq_17), major >= 17);
        assert_eq!(cfg!(libpq_18), major >= 18);
    }

    /// `.ci/run` sets `PQLIB_EXPECT_LIBPQ` for its libpq 18 step: a build that quietly found
    /// another libpq (a wrong `PKG_CONFIG_PATH`, a stale target dir) fails here.
    #[test]
    fn the_linked_libpq_is_the_one_ci_expects() {
        if let Some(expected) = std::env::var_os("PQLIB_EXPECT_LIBPQ") {
            let expected = expected.to_string_lossy();
            assert_eq!(version().major.to_string(), expected, "linked libpq");
            let headers = Version::from_number(pqlib_sys::LIBPQ_HEADER_VERSION_NUMBER);
            assert_eq!(headers.major.to_string(), expected, "libpq headers");
        }
    }
}
