//! Conversions between Rust and PostgreSQL values: the `postgres-types` crate, re-exported,
//! so that `ToSql`/`FromSql` implementations and `#[derive(ToSql, FromSql)]` types written
//! for the `postgres` crate work here unchanged. Values travel in binary format both ways.
//!
//! Types that are not built in (enums, composites, domains, arrays and ranges of them) are
//! looked up in the server's catalog the first time a connection meets their OID.
//!
//! The derive macros (feature `derive`) generate code that names the `postgres_types` crate,
//! so a crate using them also depends on it directly, as users of the `postgres` crate do:
//! `postgres-types = { version = "0.2", features = ["derive"] }` next to `pqlib`.
//!
//! ```no_run
//! # #[cfg(feature = "derive")]
//! # mod example {
//! use pqlib::types::{FromSql, ToSql};
//!
//! #[derive(Debug, ToSql, FromSql, PartialEq)]
//! #[postgres(name = "mood")]
//! enum Mood {
//!     #[postgres(name = "happy")]
//!     Happy,
//!     #[postgres(name = "sad")]
//!     Sad,
//! }
//!
//! # pub fn run() -> Result<(), pqlib::Error> {
//! let mut conn = pqlib::Connection::connect("")?;
//! conn.batch_execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")?;
//! let mood: Mood = conn.query_one("SELECT $1::mood", &[&Mood::Happy])?.get(0);
//! # Ok(()) }
//! # }
//! # fn main() {}
//! ```

use std::collections::HashMap;

pub use postgres_types::*;

use crate::Connection;
use crate::error::{Error, Result};

/// Types this connection has looked up in the catalog, by OID.
#[derive(Default)]
pub(crate) struct TypeCache {
    by_oid: HashMap<Oid, Type>,
}

impl TypeCache {
    pub(crate) fn get(&self, oid: Oid) -> Option<Type> {
        self.by_oid.get(&oid).cloned()
    }

    pub(crate) fn insert(&mut self, oid: Oid, ty: Type) {
        self.by_oid.insert(oid, ty);
    }
}

pub(crate) const TYPE_INFO: &str = "\
SELECT t.typname, t.typtype, t.typcategory, t.typelem, t.typbasetype, t.typrelid, n.nspname, \
       COALESCE(r.rngsubtype, 0::oid), COALESCE(m.rngtypid, 0::oid) \
FROM pg_catalog.pg_type t \
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid \
LEFT JOIN pg_catalog.pg_range m ON m.rngmultitypid = t.oid \
WHERE t.oid = $1";

pub(crate) const ENUM_LABELS: &str = "\
SELECT enumlabel::text FROM pg_catalog.pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder";

pub(crate) const COMPOSITE_FIELDS: &str = "\
SELECT attname, atttypid FROM pg_catalog.pg_attribute \
WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum";

/// Builds the `Type` of a non-built-in OID from the catalog. Every catalog column read here
/// has a built-in type, so the lookup never recurses into itself; element, base and field
/// types do recurse, through the connection's cache.
pub(crate) fn lookup(conn: &mut Connection, oid: Oid) -> Result<Type> {
    let rows = conn.query_typed(TYPE_INFO, &[(&oid, Type::OID)])?;
    let info = TypeInfo::from_rows(&rows, oid)?;
    drop(rows);
    let kind = match info.needs() {
        Needs::Nothing(kind) => kind,
        Needs::Labels => {
            let labels = conn.query_typed(ENUM_LABELS, &[(&oid, Type::OID)])?;
            Kind::Enum(labels.iter().map(|r| r.try_get(0)).collect::<Result<_>>()?)
        }
        Needs::Fields => {
            let rows = conn.query_typed(COMPOSITE_FIELDS, &[(&info.relation, Type::OID)])?;
            let fields = composite_fields(&rows)?;
            drop(rows);
            Kind::Composite(
                fields
                    .into_iter()
                    .map(|(name, oid)| Ok(Field::new(name, conn.resolve_type(oid)?)))
                    .collect::<Result<_>>()?,
            )
        }
        Needs::Type(oid, wrap) => wrap(conn.resolve_type(oid)?),
    };
    Ok(Type::new(info.name, oid, kind, info.schema))
}

/// One `pg_type` row: what a type is and what else must be looked up to describe it.
pub(crate) struct TypeInfo {
    pub(crate) name: String,
    pub(crate) schema: String,
    pub(crate) relation: Oid,
    typtype: u8,
    category: u8,
    element: Oid,
    base: Oid,
    range_subtype: Oid,
    multirange_of: Oid,
}

/// What describing a type takes beyond its `pg_type` row.
pub(crate) enum Needs {
    /// Nothing: this is the kind.
    Nothing(Kind),
    /// The enum's labels (`ENUM_LABELS`).
    Labels,
    /// The composite's fields (`COMPOSITE_FIELDS` on `relation`).
    Fields,
    /// Another type (element, base or subtype), wrapped into the kind.
    Type(Oid, fn(Type) -> Kind),
}

impl TypeInfo {
    pub(crate) fn from_rows(rows: &crate::Rows, oid: Oid) -> Result<TypeInfo> {
        let Some(row) = rows.get(0) else {
            return Err(Error::client(format!("type OID {oid} is not in pg_type")));
        };
        Ok(TypeInfo {
            name: row.try_get(0)?,
            typtype: row.try_get::<_, i8>(1)? as u8,
            category: row.try_get::<_, i8>(2)? as u8,
            element: row.try_get(3)?,
            base: row.try_get(4)?,
            relation: row.try_get(5)?,
            schema: row.try_get(6)?,
            range_subtype: row.try_get(7)?,
            multirange_of: row.try_get(8)?,
        })
    }

    pub(crate) fn needs(&self) -> Needs {
        match self.typtype {
            b'e' => Needs::Labels,
            b'p' => Needs::Nothing(Kind::Pseudo),
            b'c' => Needs::Fields,
            b'd' => Needs::Type(self.base, Kind::Domain),
            b'r' => Needs::Type(self.range_subtype, Kind::Range),
            b'm' => Needs::Type(self.multirange_of, Kind::Multirange),
            _ if self.category == b'A' && self.element != 0 => {
                Needs::Type(self.element, Kind::Array)
            }
            _ => Needs::Nothing(Kind::Simple),
        }
    }
}

/// The (name, type OID) pairs of a `COMPOSITE_FIELDS` result.
pub(crate) fn composite_fields(rows: &crate::Rows) -> Result<Vec<(String, Oid)>> {
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Refuses a binary array value whose header claims more elements than its bytes can hold.
/// postgres-types reserves room for the claimed count up front, so a corrupt or hostile value
/// could otherwise make it allocate gigabytes (and abort) from a few bytes of input.
pub(crate) fn check_array_header(ty: &Type, raw: Option<&[u8]>) -> Result<()> {
    let (Kind::Array(_), Some(raw)) = (ty.kind(), raw) else {
        return Ok(());
    };
    let word = |at: usize| {
        raw.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(dimensions) = word(0) else {
        return Ok(()); // too short: the decoder reports it
    };
    let header = 12 + 8 * usize::try_from(dimensions.max(0)).unwrap_or(0);
    let mut elements: u64 = if dimensions > 0 { 1 } else { 0 };
    for d in 0..usize::try_from(dimensions.max(0)).unwrap_or(0) {
        let Some(len) = word(12 + 8 * d) else {
            return Ok(());
        };
        elements = elements.saturating_mul(u64::try_from(len.max(0)).unwrap_or(0));
    }
    // Every element takes at least its 4-byte length.
    let room = raw.len().saturating_sub(header) as u64 / 4;
    if elements > room {
        return Err(Error::conversion(
            format!("an array value of type {ty}"),
            format!(
                "its header claims {elements} elements but it holds {} bytes",
                raw.len()
            )
            .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(dims: &[i32], elements: &[i32]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(dims.len() as i32).to_be_bytes());
        raw.extend_from_slice(&0i32.to_be_bytes()); // no NULLs
        raw.extend_from_slice(&Type::INT4.oid().to_be_bytes());
        for &len in dims {
            raw.extend_from_slice(&len.to_be_bytes());
            raw.extend_from_slice(&1i32.to_be_bytes());
        }
        for &e in elements {
            raw.extend_from_slice(&4i32.to_be_bytes());
            raw.extend_from_slice(&e.to_be_bytes());
        }
        raw
    }

    #[test]
    fn array_headers_must_fit_their_bytes() {
        let good = array(&[3], &[1, 2, 3]);
        assert!(check_array_header(&Type::INT4_ARRAY, Some(&good)).is_ok());
        assert_eq!(
            Vec::<i32>::from_sql(&Type::INT4_ARRAY, &good).unwrap(),
            [1, 2, 3]
        );
        assert!(check_array_header(&Type::INT4_ARRAY, Some(&array(&[], &[]))).is_ok());
        // A billion elements claimed in a few dozen bytes: refused before any allocation.
        let hostile = array(&[1_000_000_000], &[1]);
        let e = check_array_header(&Type::INT4_ARRAY, Some(&hostile)).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Conversion);
        let hostile_2d = array(&[65_536, 65_536], &[1, 2]);
        assert!(check_array_header(&Type::INT4_ARRAY, Some(&hostile_2d)).is_err());
        // Not an array, or NULL: nothing to check.
        assert!(check_array_header(&Type::INT4, Some(&hostile)).is_ok());
        assert!(check_array_header(&Type::INT4_ARRAY, None).is_ok());
    }
}
