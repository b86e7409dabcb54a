//! Relations and the rows (tuples) of Insert, Update and Delete messages.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::types::{FromSql, Oid, Type, WrongType};

/// How the server identifies the old row of an update or delete (`REPLICA IDENTITY`).
///
/// ```no_run
/// # fn f(relation: &pqlib::replication::pgoutput::Relation) {
/// use pqlib::replication::pgoutput::ReplicaIdentity;
/// if relation.replica_identity == ReplicaIdentity::Full {
///     println!("updates and deletes carry the whole old row");
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplicaIdentity {
    /// `d`: the primary key (the default).
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    pub(super) fn from_byte(byte: u8) -> Option<ReplicaIdentity> {
        Some(match byte {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            _ => return None,
        })
    }
}

/// One column of a [`Relation`].
///
/// ```no_run
/// # fn f(relation: &pqlib::replication::pgoutput::Relation) {
/// for column in &relation.columns {
///     println!("{} (type {}, key: {})", column.name, column.type_oid, column.is_key());
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelationColumn {
    /// The flags: bit 0 (1) marks a column of the replica identity key.
    pub flags: u8,
    /// The column's name.
    pub name: String,
    /// The OID of the column's type.
    pub type_oid: Oid,
    /// The type modifier (`atttypmod`), -1 for none.
    pub type_modifier: i32,
    /// The column's type: a built-in one, or one a Type message described earlier (as a
    /// [`Kind::Simple`](crate::types::Kind::Simple) type with that name); `None` otherwise.
    pub ty: Option<Type>,
}

impl RelationColumn {
    /// Whether the column is part of the replica identity key (flag bit 0).
    ///
    /// ```no_run
    /// # fn f(column: &pqlib::replication::pgoutput::RelationColumn) {
    /// let key = column.is_key();
    /// # }
    /// ```
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// A table as a Relation message describes it; [`Decoder`](super::Decoder) keeps the latest
/// one per OID ([`Decoder::relation`](super::Decoder::relation)), since Insert, Update and
/// Delete name their table by OID only.
///
/// ```no_run
/// # fn f(decoder: &pqlib::replication::pgoutput::Decoder, oid: u32) {
/// if let Some(relation) = decoder.relation(oid) {
///     println!("{}.{}: {} columns", relation.namespace, relation.name, relation.columns.len());
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Relation {
    /// The table's OID.
    pub oid: Oid,
    /// The schema (`pg_catalog` where the message has the empty string).
    pub namespace: String,
    /// The table's name.
    pub name: String,
    /// Its replica identity.
    pub replica_identity: ReplicaIdentity,
    /// Its columns, in the order of the tuples' values (generated and dropped columns, which
    /// pgoutput does not send, are not there).
    pub columns: Vec<RelationColumn>,
}

impl Relation {
    /// The index of the column named `name`.
    ///
    /// ```no_run
    /// # fn f(relation: &pqlib::replication::pgoutput::Relation) {
    /// let i = relation.column_index("id");
    /// # }
    /// ```
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// One value of a [`Tuple`].
///
/// ```no_run
/// # fn f(tuple: &pqlib::replication::pgoutput::Tuple) {
/// use pqlib::replication::pgoutput::TupleColumn;
/// for value in tuple.columns() {
///     match value {
///         TupleColumn::Null => println!("NULL"),
///         TupleColumn::UnchangedToast => println!("(unchanged)"),
///         TupleColumn::Text(bytes) => println!("{}", String::from_utf8_lossy(bytes)),
///         TupleColumn::Binary(bytes) => println!("{} bytes", bytes.len()),
///         _ => {}
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TupleColumn {
    /// `n`: NULL.
    Null,
    /// `u`: an unchanged TOASTed value the server did not send (an update that left a large
    /// value as it was); the subscriber keeps the value it has.
    UnchangedToast,
    /// `t`: the value in text format (a slice of the message, not a copy).
    Text(Bytes),
    /// `b`: the value in binary format (the `binary` option; a slice of the message).
    Binary(Bytes),
}

/// A row of an Insert, Update or Delete message: one [`TupleColumn`] per column of the
/// [`Relation`].
///
/// ```no_run
/// # fn f(tuple: &pqlib::replication::pgoutput::Tuple,
/// #      relation: &pqlib::replication::pgoutput::Relation) -> Result<(), pqlib::Error> {
/// let id: i32 = tuple.try_get(relation, "id")?;
/// let name: Option<&str> = tuple.text(1)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub(super) columns: Vec<TupleColumn>,
}

/// The old row of an Update or Delete.
///
/// ```no_run
/// # fn f(old: &pqlib::replication::pgoutput::OldTuple) {
/// use pqlib::replication::pgoutput::OldTuple;
/// match old {
///     OldTuple::Key(key) => println!("key columns: {:?}", key.columns()),
///     OldTuple::Full(row) => println!("old row: {:?}", row.columns()),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OldTuple {
    /// `K`: the replica identity key's columns (the others are NULL).
    Key(Tuple),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    /// The tuple, key or full.
    ///
    /// ```no_run
    /// # fn f(old: &pqlib::replication::pgoutput::OldTuple) {
    /// let columns = old.tuple().columns().len();
    /// # }
    /// ```
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(tuple) | OldTuple::Full(tuple) => tuple,
        }
    }
}

/// A column of a [`Tuple`], by index or by name (looked up in the [`Relation`]).
///
/// ```no_run
/// # fn f(tuple: &pqlib::replication::pgoutput::Tuple,
/// #      relation: &pqlib::replication::pgoutput::Relation) -> Result<(), pqlib::Error> {
/// let by_index: i64 = tuple.try_get(relation, 0)?;
/// let by_name: i64 = tuple.try_get(relation, "id")?;
/// # Ok(()) }
/// ```
pub trait TupleIndex: sealed::Sealed {
    /// The column's index in `relation`, if it has such a column.
    #[doc(hidden)]
    fn __index(&self, relation: &Relation) -> Option<usize>;
    /// How to name the column in an error.
    #[doc(hidden)]
    fn __describe(&self) -> String;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for str {}
    impl Sealed for String {}
    impl<T: ?Sized + Sealed> Sealed for &T {}
}

impl TupleIndex for usize {
    fn __index(&self, relation: &Relation) -> Option<usize> {
        (*self < relation.columns.len()).then_some(*self)
    }
    fn __describe(&self) -> String {
        format!("column {self}")
    }
}

impl TupleIndex for str {
    fn __index(&self, relation: &Relation) -> Option<usize> {
        relation.column_index(self)
    }
    fn __describe(&self) -> String {
        format!("column {self:?}")
    }
}

impl TupleIndex for String {
    fn __index(&self, relation: &Relation) -> Option<usize> {
        self.as_str().__index(relation)
    }
    fn __describe(&self) -> String {
        self.as_str().__describe()
    }
}

impl<T: ?Sized + TupleIndex> TupleIndex for &T {
    fn __index(&self, relation: &Relation) -> Option<usize> {
        (**self).__index(relation)
    }
    fn __describe(&self) -> String {
        (**self).__describe()
    }
}

/// Types whose text and binary forms are the same bytes.
fn is_text_type(ty: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .contains(ty)
}

impl Tuple {
    /// The values, one per column of the relation.
    ///
    /// ```no_run
    /// # fn f(tuple: &pqlib::replication::pgoutput::Tuple) {
    /// println!("{} values", tuple.columns().len());
    /// # }
    /// ```
    pub fn columns(&self) -> &[TupleColumn] {
        &self.columns
    }

    /// The number of values.
    ///
    /// ```no_run
    /// # fn f(tuple: &pqlib::replication::pgoutput::Tuple) {
    /// assert_eq!(tuple.len(), tuple.columns().len());
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the tuple has no values (a table without columns).
    ///
    /// ```no_run
    /// # fn f(tuple: &pqlib::replication::pgoutput::Tuple) {
    /// let empty = tuple.is_empty();
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Value `index` in text format, UTF-8 checked; `None` for NULL.
    ///
    /// # Errors
    /// Of kind [`Column`](crate::error::ErrorKind::Column) for an index out of range;
    /// [`Conversion`](crate::error::ErrorKind::Conversion) for a binary-format value, an
    /// unchanged TOAST value or text that is not UTF-8.
    ///
    /// ```no_run
    /// # fn f(tuple: &pqlib::replication::pgoutput::Tuple) -> Result<(), pqlib::Error> {
    /// if let Some(text) = tuple.text(0)? {
    ///     println!("{text}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn text(&self, index: usize) -> Result<Option<&str>> {
        match self.column(index)? {
            TupleColumn::Null => Ok(None),
            TupleColumn::Text(bytes) => std::str::from_utf8(bytes)
                .map(Some)
                .map_err(|e| Error::conversion(format!("value {index}"), Box::new(e))),
            TupleColumn::UnchangedToast => Err(unchanged_toast(&format!("value {index}"))),
            TupleColumn::Binary(_) => Err(Error::conversion(
                format!("value {index}"),
                "it is in binary format (the binary option), not text".into(),
            )),
        }
    }

    fn column(&self, index: usize) -> Result<&TupleColumn> {
        self.columns
            .get(index)
            .ok_or_else(|| Error::column(format!("{index} (the tuple has {} values)", self.len())))
    }

    /// The value of `column` (an index or a column name), converted to `T` with the column's
    /// type from `relation` (the table's Relation message, [`Decoder::relation`](
    /// super::Decoder::relation)).
    ///
    /// Binary-format values go through `FromSql` with the column's type: a built-in type, or
    /// one a Type message described. Text-format values only for the types whose text and
    /// binary forms agree (`text`, `varchar`, `bpchar`, `name`, `unknown`): for others, ask
    /// for binary values (the `binary` option) or read the text with [`text`](Self::text).
    ///
    /// # Errors
    /// Of kind [`Column`](crate::error::ErrorKind::Column) for a column the relation or the
    /// tuple does not have; [`Conversion`](crate::error::ErrorKind::Conversion) for a wrong
    /// Rust type, NULL into a non-`Option`, an unchanged TOAST value, an unknown type OID or
    /// a text-format value of a non-text type.
    ///
    /// ```no_run
    /// # fn f(tuple: &pqlib::replication::pgoutput::Tuple,
    /// #      relation: &pqlib::replication::pgoutput::Relation) -> Result<(), pqlib::Error> {
    /// let id: i64 = tuple.try_get(relation, "id")?;
    /// let note: Option<String> = tuple.try_get(relation, 2)?;
    /// # Ok(()) }
    /// ```
    pub fn try_get<'a, T, I>(&'a self, relation: &Relation, column: I) -> Result<T>
    where
        T: FromSql<'a>,
        I: TupleIndex,
    {
        let Some(index) = column.__index(relation) else {
            return Err(Error::column(format!(
                "{} (relation {}.{} has {} columns)",
                column.__describe(),
                relation.namespace,
                relation.name,
                relation.columns.len()
            )));
        };
        let value = self.column(index)?;
        let meta = &relation.columns[index];
        // Only an error needs the description: built then, so that a read allocates nothing.
        let what = || {
            format!(
                "{} ({}) of {}",
                column.__describe(),
                meta.name,
                relation.name
            )
        };
        let Some(ty) = meta.ty.as_ref() else {
            return Err(Error::conversion(
                what(),
                format!(
                    "unknown type oid {} (neither built in nor described by a Type message)",
                    meta.type_oid
                )
                .into(),
            ));
        };
        let raw = match value {
            TupleColumn::Null => None,
            TupleColumn::UnchangedToast => return Err(unchanged_toast(&what())),
            TupleColumn::Binary(bytes) => Some(&bytes[..]),
            TupleColumn::Text(bytes) if is_text_type(ty) => Some(&bytes[..]),
            TupleColumn::Text(_) => {
                return Err(Error::conversion(
                    what(),
                    format!(
                        "a {ty} value in text format converts only with the binary option \
                         (or read the text with Tuple::text)"
                    )
                    .into(),
                ));
            }
        };
        if !T::accepts(ty) {
            return Err(Error::conversion(
                what(),
                Box::new(WrongType::new::<T>(ty.clone())),
            ));
        }
        crate::types::check_array_header(ty, raw)?;
        T::from_sql_nullable(ty, raw)
            .map_err(|e| Error::conversion(format!("{} of type {ty}", what()), e))
    }
}

fn unchanged_toast(what: &str) -> Error {
    Error::conversion(
        what.to_owned(),
        "an unchanged TOASTed value: the server did not send it (the row's value is as it was)"
            .into(),
    )
}
