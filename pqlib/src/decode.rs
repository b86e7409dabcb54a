//! Direct decoding of the common built-in types, decided once per column.
//!
//! `postgres-types` decides per value what a value is: `<&str as FromSql>::from_sql` asks the
//! type's name three times (for `ltree`, `lquery`, `ltxtquery`) before it validates the
//! UTF-8. A [`Direct`] is that decision taken once, when the column is described; reading a
//! value as one of the Rust types below then takes the bytes straight from the column's kind.
//!
//! The direct path only ever produces what `FromSql` would: it decodes the bytes the same way
//! and makes the same checks (exact length, valid UTF-8), and leaves every value it does not
//! take (NULL into a non-`Option`, a wrong length, invalid UTF-8) to `FromSql`, so the errors
//! are `FromSql`'s own.

use std::any::TypeId;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::types::{FromSql, Type};

/// How a column's values are decoded directly: the wire format of its type, when that is one
/// of the built-in types below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direct {
    /// Not decoded directly: every value goes through `FromSql`.
    No,
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `text`, `varchar`, `bpchar`, `name`, `unknown`: the bytes, if they are UTF-8.
    Text,
    Bytea,
    /// `timestamp` and `timestamptz`: microseconds since 2000-01-01.
    Timestamp,
}

impl Direct {
    pub(crate) fn of(ty: &Type) -> Direct {
        match *ty {
            Type::BOOL => Direct::Bool,
            Type::INT2 => Direct::Int2,
            Type::INT4 => Direct::Int4,
            Type::INT8 => Direct::Int8,
            Type::FLOAT4 => Direct::Float4,
            Type::FLOAT8 => Direct::Float8,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => Direct::Text,
            Type::BYTEA => Direct::Bytea,
            Type::TIMESTAMP | Type::TIMESTAMPTZ => Direct::Timestamp,
            _ => Direct::No,
        }
    }
}

/// The `TypeId` of `T` with its lifetimes erased (`&'a str` gives `&'static str`'s).
///
/// `TypeId::of` wants `T: 'static`, which the types read from a row (`&'r str`) are not.
/// Lifetimes do not exist when the program runs, so the id is asked through a trait object
/// whose lifetime bound is widened to `'static`. Equal ids therefore mean "the same type up
/// to lifetimes"; [`direct`] says why that is enough for the types it compares.
#[inline(always)]
fn erased_type_id<T: ?Sized>() -> TypeId {
    trait Id {
        fn id(&self) -> TypeId
        where
            Self: 'static;
    }
    impl<T: ?Sized> Id for PhantomData<T> {
        #[inline(always)]
        fn id(&self) -> TypeId
        where
            Self: 'static,
        {
            TypeId::of::<T>()
        }
    }
    let marker = PhantomData::<T>;
    let object: &dyn Id = &marker;
    // SAFETY: only the trait object's lifetime bound changes; the object is a zero-sized
    // `PhantomData` that holds no reference, and `id` reads nothing of it. The `TypeId` it
    // returns is the same for every lifetime, which is what is wanted here.
    let object = unsafe { std::mem::transmute::<&dyn Id, &(dyn Id + 'static)>(object) };
    object.id()
}

/// `value` as `T`.
///
/// # Safety
/// `T` is `A` (for a reference, with the same lifetime).
#[inline(always)]
unsafe fn same<A: Copy, T>(value: A) -> T {
    debug_assert_eq!(std::mem::size_of::<A>(), std::mem::size_of::<T>());
    // SAFETY: `T` is `A` (the caller's contract), and `A` is `Copy`: nothing is dropped twice.
    unsafe { std::mem::transmute_copy::<A, T>(&value) }
}

/// `raw` as exactly `N` bytes.
#[inline(always)]
fn fixed<const N: usize>(raw: &[u8]) -> Option<[u8; N]> {
    raw.try_into().ok()
}

/// `raw` as a `str` if it is UTF-8, checked cheaply first for the common ASCII.
#[inline(always)]
fn utf8(raw: &[u8]) -> Option<&str> {
    if raw.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(raw) });
    }
    std::str::from_utf8(raw).ok()
}

/// Microseconds since 2000-01-01 as a `SystemTime`, computed as `postgres-types` does.
#[inline(always)]
fn system_time(micros: i64) -> SystemTime {
    const PG_EPOCH: u64 = 946_684_800; // 2000-01-01 in seconds since 1970
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH);
    let abs = micros.unsigned_abs();
    let offset = Duration::new(abs / 1_000_000, ((abs % 1_000_000) * 1_000) as u32);
    if micros < 0 {
        epoch - offset
    } else {
        epoch + offset
    }
}

/// The value `raw` of a column decoded as `direct`, if `T` is a type that kind is decoded to
/// directly and the value is one `T::from_sql_nullable` would accept; `None` otherwise (the
/// caller then asks `FromSql`). The caller has checked `T::accepts` on the column's type.
///
/// Which branch runs is decided at compile time by `T`. Equal [`erased_type_id`]s make `T`
/// the compared type: the types without lifetimes have no other types sharing their id, and
/// `&'x str`, `&'x [u8]` (and `Option`s of them) implement `FromSql<'a>` only for `'x == 'a`,
/// so the `&'a str` made here is exactly `T`.
#[inline(always)]
pub(crate) fn direct<'a, T: FromSql<'a>>(kind: Direct, raw: Option<&'a [u8]>) -> Option<T> {
    let id = erased_type_id::<T>();
    macro_rules! decode {
        ($($kind:ident => $t:ty = |$raw:ident| $value:expr;)*) => {$(
            if id == erased_type_id::<$t>() {
                if kind != Direct::$kind {
                    return None;
                }
                let $raw = raw?;
                let value: $t = $value;
                // SAFETY: `T` is `$t` (see above).
                return Some(unsafe { same::<$t, T>(value) });
            }
            if id == erased_type_id::<Option<$t>>() {
                if kind != Direct::$kind {
                    return None;
                }
                let value: Option<$t> = match raw {
                    None => None,
                    Some($raw) => Some($value),
                };
                // SAFETY: `T` is `Option<$t>` (see above).
                return Some(unsafe { same::<Option<$t>, T>(value) });
            }
        )*};
    }
    decode! {
        Bool => bool = |raw| fixed::<1>(raw)?[0] != 0;
        Int2 => i16 = |raw| i16::from_be_bytes(fixed(raw)?);
        Int4 => i32 = |raw| i32::from_be_bytes(fixed(raw)?);
        Int8 => i64 = |raw| i64::from_be_bytes(fixed(raw)?);
        Float4 => f32 = |raw| f32::from_be_bytes(fixed(raw)?);
        Float8 => f64 = |raw| f64::from_be_bytes(fixed(raw)?);
        Text => &'a str = |raw| utf8(raw)?;
        Bytea => &'a [u8] = |raw| raw;
        Timestamp => SystemTime = |raw| system_time(i64::from_be_bytes(fixed(raw)?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `FromSql` makes of `raw`, and what the direct path makes of it (`None`: it leaves
    /// the value to `FromSql`).
    fn both<'a, T: FromSql<'a>>(ty: &Type, raw: Option<&'a [u8]>) -> (Option<T>, Option<T>) {
        assert!(T::accepts(ty));
        let direct = direct::<T>(Direct::of(ty), raw);
        (T::from_sql_nullable(ty, raw).ok(), direct)
    }

    /// Every value the direct path decodes, it decodes as `FromSql` does.
    fn agrees<'a, T: FromSql<'a> + PartialEq + std::fmt::Debug>(
        ty: &Type,
        raw: Option<&'a [u8]>,
    ) -> bool {
        let (expected, direct) = both::<T>(ty, raw);
        if let Some(direct) = &direct {
            assert_eq!(Some(direct), expected.as_ref(), "{ty} {raw:?}");
        }
        direct.is_some()
    }

    #[test]
    fn direct_values_are_those_of_from_sql() {
        let i4 = 7i32.to_be_bytes();
        assert!(agrees::<i32>(&Type::INT4, Some(&i4)));
        assert!(agrees::<Option<i32>>(&Type::INT4, Some(&i4)));
        assert!(agrees::<Option<i32>>(&Type::INT4, None));
        assert!(agrees::<i16>(&Type::INT2, Some(&(-3i16).to_be_bytes())));
        assert!(agrees::<i64>(&Type::INT8, Some(&i64::MIN.to_be_bytes())));
        assert!(agrees::<f32>(&Type::FLOAT4, Some(&1.5f32.to_be_bytes())));
        assert!(agrees::<f64>(
            &Type::FLOAT8,
            Some(&(-0.25f64).to_be_bytes())
        ));
        assert!(agrees::<bool>(&Type::BOOL, Some(&[1])));
        assert!(agrees::<bool>(&Type::BOOL, Some(&[0])));
        for ty in [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME] {
            assert!(agrees::<&str>(&ty, Some("héllo".as_bytes())));
            assert!(agrees::<Option<&str>>(&ty, Some(b"")));
        }
        assert!(agrees::<&[u8]>(&Type::BYTEA, Some(&[0, 255, 1])));
        for micros in [
            0i64,
            1,
            -1,
            1_234_567_890_123,
            -1_234_567_890_123,
            i64::MAX,
            i64::MIN,
        ] {
            let raw = micros.to_be_bytes();
            assert!(agrees::<SystemTime>(&Type::TIMESTAMPTZ, Some(&raw)));
            assert!(agrees::<SystemTime>(&Type::TIMESTAMP, Some(&raw)));
        }
    }

    #[test]
    fn values_in_error_are_left_to_from_sql() {
        // NULL into a non-Option, wrong lengths, invalid UTF-8: FromSql reports them.
        assert!(!agrees::<i32>(&Type::INT4, None));
        assert!(!agrees::<i32>(&Type::INT4, Some(&[0, 0, 1])));
        assert!(!agrees::<i32>(&Type::INT4, Some(&[0, 0, 0, 0, 1])));
        assert!(!agrees::<Option<i64>>(&Type::INT8, Some(&[0; 4])));
        assert!(!agrees::<bool>(&Type::BOOL, Some(&[])));
        assert!(!agrees::<&str>(&Type::TEXT, Some(&[0xff, 0xfe])));
        assert!(!agrees::<Option<&str>>(&Type::TEXT, Some(&[b'a', 0xc3])));
        assert!(!agrees::<SystemTime>(&Type::TIMESTAMP, Some(&[0; 7])));
        // Types read through FromSql: another Rust type, or a column type not decoded here.
        assert!(!agrees::<String>(&Type::TEXT, Some(b"x")));
        assert!(!agrees::<i64>(&Type::INT8, None));
        assert_eq!(Direct::of(&Type::OID), Direct::No);
        assert_eq!(Direct::of(&Type::JSON), Direct::No);
        assert_eq!(Direct::of(&Type::INT4_ARRAY), Direct::No);
    }

    #[test]
    fn a_type_is_only_decoded_from_its_own_kind() {
        // i64 accepts INT8 only, but the check is the kind's, not the caller's.
        assert_eq!(direct::<i64>(Direct::Int4, Some(&[0; 8])), None);
        assert_eq!(direct::<&str>(Direct::Bytea, Some(b"abc")), None);
        assert_eq!(direct::<Option<f64>>(Direct::Float4, None), None);
    }
}
