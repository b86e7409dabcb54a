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
