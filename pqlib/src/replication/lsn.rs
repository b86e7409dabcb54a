//! Log sequence numbers: positions in the write-ahead log.

use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};

use crate::types::{FromSql, IsNull, ToSql, Type};

/// A position in the write-ahead log (`pg_lsn`): a byte offset, written `X/Y` with the high
/// and low 32 bits in hexadecimal (`16/B374D848`).
///
/// Parsing is strict (two hexadecimal parts of at most 8 digits each, nothing else), unlike
/// `postgres_types::PgLsn`, which accepts `1FFFFFFFF/0` and silently drops bits. Adding or
/// subtracting a byte count saturates at the ends of the log ([`Lsn::INVALID`] and
/// [`Lsn::MAX`]); [`checked_add`](Lsn::checked_add) and [`checked_sub`](Lsn::checked_sub)
/// say when it would. The distance between two LSNs is [`bytes_since`](Lsn::bytes_since).
///
/// ```
/// use pqlib::replication::Lsn;
///
/// let lsn: Lsn = "16/B374D848".parse()?;
/// assert_eq!(u64::from(lsn), 0x16_B374_D848);
/// assert_eq!(lsn.to_string(), "16/B374D848");
/// let next = lsn + 0x7B8;
/// assert_eq!(next.to_string(), "16/B374E000");
/// assert!(next > lsn);
/// assert_eq!(next.bytes_since(lsn), Some(0x7B8));
/// assert!("16/B374D848 ".parse::<Lsn>().is_err());
/// # Ok::<(), pqlib::replication::ParseLsnError>(())
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[doc(alias = "pg_lsn")]
#[doc(alias = "XLogRecPtr")]
pub struct Lsn(u64);

impl Lsn {
    /// `0/0`, which the server uses for "no position" (`InvalidXLogRecPtr`).
    ///
    /// ```
    /// assert_eq!(pqlib::replication::Lsn::INVALID.to_string(), "0/0");
    /// ```
    pub const INVALID: Lsn = Lsn(0);

    /// The largest position, `FFFFFFFF/FFFFFFFF`.
    ///
    /// ```
    /// assert_eq!(pqlib::replication::Lsn::MAX.to_string(), "FFFFFFFF/FFFFFFFF");
    /// ```
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// The LSN at byte offset `offset`.
    ///
    /// ```
    /// use pqlib::replication::Lsn;
    /// assert_eq!(Lsn::new(0x1_0000_0000).to_string(), "1/0");
    /// ```
    pub const fn new(offset: u64) -> Lsn {
        Lsn(offset)
    }

    /// The byte offset.
    ///
    /// ```
    /// use pqlib::replication::Lsn;
    /// assert_eq!(Lsn::new(42).offset(), 42);
    /// ```
    pub const fn offset(self) -> u64 {
        self.0
    }

    /// Whether this is [`Lsn::INVALID`] (`0/0`).
    ///
    /// ```
    /// use pqlib::replication::Lsn;
    /// assert!(Lsn::INVALID.is_invalid());
    /// assert!(!Lsn::new(1).is_invalid());
    /// ```
    pub const fn is_invalid(self) -> bool {
        self.0 == 0
    }

    /// `bytes` further on, or `None` past [`Lsn::MAX`].
    ///
    /// ```
    /// use pqlib::replication::Lsn;
    /// assert_eq!(Lsn::new(1).checked_add(1), Some(Lsn::new(2)));
    /// assert_eq!(Lsn::MAX.checked_add(1), None);
    /// ```
    pub const fn checked_add(self, bytes: u64) -> Option<Lsn> {
        match self.0.checked_add(bytes) {
            Some(offset) => Some(Lsn(offset)),
            None => None,
        }
    }

    /// `bytes` back, or `None` before `0/0`.
    ///
    /// ```
    /// use pqlib::replication::Lsn;
    /// assert_eq!(Lsn::new(2).checked_sub(1), Some(Lsn::new(1)));
    /// assert_eq!(Lsn::INVALID.checked_sub(1), None);
    /// ```
    pub const fn checked_sub(self, bytes: u64) -> Option<Lsn> {
        match self.0.checked_sub(bytes) {
            Some(offset) => Some(Lsn(offset)),
            None => None,
        }
    }

    /// How many bytes of WAL lie between `earlier` and this LSN, or `None` if `earlier` is
    /// later.
    ///
    /// ```
    /// use pqlib::replication::Lsn;
    /// let (a, b) = (Lsn::new(100), Lsn::new(160));
    /// assert_eq!(b.bytes_since(a), Some(60));
    /// assert_eq!(a.bytes_since(b), None);
    /// ```
    pub const fn bytes_since(self, earlier: Lsn) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }
}

/// Saturates at [`Lsn::MAX`].
impl std::ops::Add<u64> for Lsn {
    type Output = Lsn;

    fn add(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_add(bytes))
    }
}

/// Saturates at [`Lsn::MAX`].
impl std::ops::AddAssign<u64> for Lsn {
    fn add_assign(&mut self, bytes: u64) {
        *self = *self + bytes;
    }
}

/// Saturates at [`Lsn::INVALID`].
impl std::ops::Sub<u64> for Lsn {
    type Output = Lsn;

    fn sub(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_sub(bytes))
    }
}

/// Saturates at [`Lsn::INVALID`].
impl std::ops::SubAssign<u64> for Lsn {
    fn sub_assign(&mut self, bytes: u64) {
        *self = *self - bytes;
    }
}

impl From<u64> for Lsn {
    fn from(offset: u64) -> Lsn {
        Lsn(offset)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> u64 {
        lsn.0
    }
}

impl From<postgres_types::PgLsn> for Lsn {
    fn from(lsn: postgres_types::PgLsn) -> Lsn {
        Lsn(lsn.into())
    }
}

impl From<Lsn> for postgres_types::PgLsn {
    fn from(lsn: Lsn) -> postgres_types::PgLsn {
        lsn.0.into()
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

/// Text that is not an LSN in `X/Y` form.
///
/// ```
/// let error = "12345".parse::<pqlib::replication::Lsn>().unwrap_err();
/// assert!(error.to_string().contains("12345"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseLsnError {
    text: String,
}

impl fmt::Display for ParseLsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an LSN (two hexadecimal numbers of up to 8 digits, as in 16/B374D848)",
            self.text
        )
    }
}

impl StdError for ParseLsnError {}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(text: &str) -> Result<Lsn, ParseLsnError> {
        let error = || ParseLsnError {
            text: text.to_owned(),
        };
        let (high, low) = text.split_once('/').ok_or_else(error)?;
        let half = |part: &str| {
            let hex =
                !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_hexdigit());
            if hex {
                u32::from_str_radix(part, 16).ok()
            } else {
                None
            }
        };
        match (half(high), half(low)) {
            (Some(high), Some(low)) => Ok(Lsn(u64::from(high) << 32 | u64::from(low))),
            _ => Err(error()),
        }
    }
}

impl ToSql for Lsn {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.put_u64(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::PG_LSN
    }

    postgres_types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Lsn {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Lsn, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a pg_lsn is 8 bytes, not {}", raw.len()))?;
        Ok(Lsn(u64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::PG_LSN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_bad_text_is_refused() {
        for (text, offset) in [
            ("0/0", 0),
            ("0/1", 1),
            ("1/0", 1 << 32),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.offset(), offset, "{text}");
            assert_eq!(lsn.to_string(), text);
        }
        // Lower case and leading zeros are read; printing is PostgreSQL's (upper, no zeros).
        assert_eq!("0016/00b374d848".parse::<Lsn>().ok(), None);
        assert_eq!(
            "016/0b374d84".parse::<Lsn>().unwrap().to_string(),
            "16/B374D84"
        );
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "0/0/0",
            "1FFFFFFFF/0",
            "0/100000000",
            " 0/0",
            "0/0 ",
            "+1/0",
            "-1/0",
            "0x1/0",
            "g/0",
            "é/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn arithmetic_saturates_and_checked_forms_say_so() {
        let lsn = Lsn::new(10);
        assert_eq!(lsn + 5, Lsn::new(15));
        assert_eq!(lsn - 5, Lsn::new(5));
        assert_eq!(lsn - 20, Lsn::INVALID);
        assert_eq!(Lsn::MAX + 1, Lsn::MAX);
        assert_eq!(lsn.checked_sub(11), None);
        let mut moving = lsn;
        moving += 6;
        moving -= 1;
        assert_eq!(moving, Lsn::new(15));
        assert_eq!(moving.bytes_since(lsn), Some(5));
        assert!(Lsn::new(1) < Lsn::new(1 << 32));
    }

    #[test]
    fn binary_form_is_eight_big_endian_bytes() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        let mut out = BytesMut::new();
        lsn.to_sql(&Type::PG_LSN, &mut out).unwrap();
        assert_eq!(&out[..], &0x16_B374_D848u64.to_be_bytes());
        assert_eq!(Lsn::from_sql(&Type::PG_LSN, &out).unwrap(), lsn);
        assert!(Lsn::from_sql(&Type::PG_LSN, &out[..7]).is_err());
        assert!(<Lsn as ToSql>::accepts(&Type::PG_LSN));
        assert!(!<Lsn as ToSql>::accepts(&Type::INT8));
        let pg: postgres_types::PgLsn = lsn.into();
        assert_eq!(Lsn::from(pg), lsn);
    }
}
