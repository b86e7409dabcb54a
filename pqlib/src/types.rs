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
//! # #[cfg(feature = "derive")]
//! # fn main() -> Result<(), pqlib::Error> {
//! let mut conn = pqlib::Connection::connect("")?;
//! conn.batch_execute("CREATE TYPE mood AS ENUM ('happy', 'sad')")?;
//! let mood: Mood = conn.query_one("SELECT $1::mood", &[&Mood::Happy])?.get(0);
//! # Ok(()) }
//! # #[cfg(not(feature = "derive"))] fn main() {}
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

const TYPE_INFO: &str = "\
SELECT t.typname, t.typtype, t.typcategory, t.typelem, t.typbasetype, t.typrelid, n.nspname, \
       COALESCE(r.rngsubtype, 0::oid), COALESCE(m.rngtypid, 0::oid) \
FROM pg_catalog.pg_type t \
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
LEFT JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid \
LEFT JOIN pg_catalog.pg_range m ON m.rngmultitypid = t.oid \
WHERE t.oid = $1";

const ENUM_LABELS: &str = "\
SELECT enumlabel::text FROM pg_catalog.pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder";

const COMPOSITE_FIELDS: &str = "\
SELECT attname, atttypid FROM pg_catalog.pg_attribute \
WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum";

/// Builds the `Type` of a non-built-in OID from the catalog. Every catalog column read here
/// has a built-in type, so the lookup never recurses into itself; element, base and field
/// types do recurse, through the connection's cache.
pub(crate) fn lookup(conn: &mut Connection, oid: Oid) -> Result<Type> {
    let rows = conn.query_typed(TYPE_INFO, &[(&oid, Type::OID)])?;
    let Some(row) = rows.get(0) else {
        return Err(Error::client(format!("type OID {oid} is not in pg_type")));
    };
    let name: String = row.try_get(0)?;
    let typtype: i8 = row.try_get(1)?;
    let category: i8 = row.try_get(2)?;
    let element: Oid = row.try_get(3)?;
    let base: Oid = row.try_get(4)?;
    let relation: Oid = row.try_get(5)?;
    let schema: String = row.try_get(6)?;
    let range_subtype: Oid = row.try_get(7)?;
    let multirange_of: Oid = row.try_get(8)?;
    drop(rows);

    let kind = match typtype as u8 {
        b'e' => {
            let labels = conn.query_typed(ENUM_LABELS, &[(&oid, Type::OID)])?;
            Kind::Enum(labels.iter().map(|r| r.try_get(0)).collect::<Result<_>>()?)
        }
        b'p' => Kind::Pseudo,
        b'd' => Kind::Domain(conn.resolve_type(base)?),
        b'r' => Kind::Range(conn.resolve_type(range_subtype)?),
        b'm' => Kind::Multirange(conn.resolve_type(multirange_of)?),
        b'c' => {
            let fields = conn.query_typed(COMPOSITE_FIELDS, &[(&relation, Type::OID)])?;
            let fields: Vec<(String, Oid)> = fields
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_>>()?;
            Kind::Composite(
                fields
                    .into_iter()
                    .map(|(name, oid)| Ok(Field::new(name, conn.resolve_type(oid)?)))
                    .collect::<Result<_>>()?,
            )
        }
        _ if category as u8 == b'A' && element != 0 => Kind::Array(conn.resolve_type(element)?),
        _ => Kind::Simple,
    };
    Ok(Type::new(name, oid, kind, schema))
}
