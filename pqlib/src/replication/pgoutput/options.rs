//! The options of `START_REPLICATION … LOGICAL … (options)` for pgoutput.

use crate::error::{Error, Result};

use super::Decoder;

/// Whether (and how) the server streams large transactions before they commit (the
/// `streaming` option, server 14+).
///
/// ```
/// use pqlib::replication::pgoutput::{PgOutputOptions, Streaming};
///
/// let options = PgOutputOptions::new(["pub"]).streaming(Streaming::On);
/// assert_eq!(options.streaming, Streaming::On);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Streaming {
    /// Transactions arrive whole, after they commit (the default).
    #[default]
    Off,
    /// A transaction larger than `logical_decoding_work_mem` arrives in Stream Start/Stop
    /// blocks while it runs, followed by Stream Commit or Stream Abort (protocol version 2+).
    On,
    /// Like [`On`](Streaming::On), for a subscriber that applies the blocks in parallel:
    /// Stream Abort also carries the abort LSN and time (protocol version 4+, server 16+).
    Parallel,
}

/// The options of the pgoutput plugin, for `START_REPLICATION SLOT … LOGICAL … (options)` or
/// `pg_logical_slot_get_binary_changes(…, VARIADIC options)`; [`decoder`](Self::decoder)
/// makes the matching [`Decoder`].
///
/// The fields are public; the methods set them in a chain.
///
/// ```
/// use pqlib::replication::pgoutput::{PgOutputOptions, Streaming};
///
/// let options = PgOutputOptions::for_server(160004, ["orders", "it's"])
///     .binary(true)
///     .streaming(Streaming::Parallel);
/// assert_eq!(options.proto_version, 4);
/// let pairs = options.start_replication_options()?;
/// assert_eq!(pairs[0], ("proto_version".to_string(), "'4'".to_string()));
/// assert_eq!(pairs[1], ("publication_names".to_string(), r#"'"orders","it''s"'"#.to_string()));
/// let mut decoder = options.decoder();
/// # Ok::<(), pqlib::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOutputOptions {
    /// `proto_version`: 1 (server 10+), 2 (14+: streaming), 3 (15+: two-phase), 4 (16+:
    /// parallel streaming).
    pub proto_version: u32,
    /// `publication_names`: the publications whose changes to send (at least one).
    pub publication_names: Vec<String>,
    /// `binary`: column values in binary format instead of text (server 14+).
    pub binary: bool,
    /// `messages`: send `pg_logical_emit_message` messages (server 14+).
    pub messages: bool,
    /// `streaming`: stream large transactions while they run (server 14+).
    pub streaming: Streaming,
    /// `two_phase`: decode prepared transactions at `PREPARE TRANSACTION` (server 15+; only
    /// when the slot was created with two-phase enabled).
    pub two_phase: bool,
    /// `origin`: `any` (the default) or `none` (only changes without a replication origin),
    /// server 16+.
    pub origin: Option<String>,
}

impl PgOutputOptions {
    /// Protocol version 1 (any server from 10 on), the given publications, everything else
    /// off.
    ///
    /// ```
    /// let options = pqlib::replication::pgoutput::PgOutputOptions::new(["pub"]);
    /// assert_eq!(options.proto_version, 1);
    /// assert!(!options.binary);
    /// ```
    pub fn new<I, S>(publications: I) -> PgOutputOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PgOutputOptions {
            proto_version: 1,
            publication_names: publications.into_iter().map(Into::into).collect(),
            binary: false,
            messages: false,
            streaming: Streaming::Off,
            two_phase: false,
            origin: None,
        }
    }

    /// Like [`new`](Self::new), with the highest protocol version the server supports
    /// ([`highest_proto_version`](Self::highest_proto_version)); `server_version_num` as in
    /// `SHOW server_version_num` or `Connection::server_version`.
    ///
    /// ```
    /// use pqlib::replication::pgoutput::PgOutputOptions;
    /// assert_eq!(PgOutputOptions::for_server(150010, ["pub"]).proto_version, 3);
    /// ```
    pub fn for_server<I, S>(server_version_num: u32, publications: I) -> PgOutputOptions
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PgOutputOptions::new(publications)
            .proto_version(PgOutputOptions::highest_proto_version(server_version_num))
    }

    /// The highest pgoutput protocol version a server supports: 1 for 10 to 13, 2 for 14, 3
    /// for 15, 4 for 16 and later.
    ///
    /// ```
    /// use pqlib::replication::pgoutput::PgOutputOptions;
    /// assert_eq!(PgOutputOptions::highest_proto_version(130000), 1);
    /// assert_eq!(PgOutputOptions::highest_proto_version(140005), 2);
    /// assert_eq!(PgOutputOptions::highest_proto_version(180001), 4);
    /// ```
    pub fn highest_proto_version(server_version_num: u32) -> u32 {
        match server_version_num / 10000 {
            ..=13 => 1,
            14 => 2,
            15 => 3,
            _ => 4,
        }
    }

    /// Sets [`proto_version`](Self::proto_version).
    ///
    /// ```
    /// let options = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).proto_version(2);
    /// assert_eq!(options.proto_version, 2);
    /// ```
    pub fn proto_version(mut self, version: u32) -> Self {
        self.proto_version = version;
        self
    }

    /// Sets [`binary`](Self::binary).
    ///
    /// ```
    /// let options = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).binary(true);
    /// assert!(options.binary);
    /// ```
    pub fn binary(mut self, binary: bool) -> Self {
        self.binary = binary;
        self
    }

    /// Sets [`messages`](Self::messages).
    ///
    /// ```
    /// let options = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).messages(true);
    /// assert!(options.messages);
    /// ```
    pub fn messages(mut self, messages: bool) -> Self {
        self.messages = messages;
        self
    }

    /// Sets [`streaming`](Self::streaming).
    ///
    /// ```
    /// use pqlib::replication::pgoutput::{PgOutputOptions, Streaming};
    /// let options = PgOutputOptions::new(["p"]).proto_version(2).streaming(Streaming::On);
    /// assert_eq!(options.streaming, Streaming::On);
    /// ```
    pub fn streaming(mut self, streaming: Streaming) -> Self {
        self.streaming = streaming;
        self
    }

    /// Sets [`two_phase`](Self::two_phase).
    ///
    /// ```
    /// let options = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).two_phase(true);
    /// assert!(options.two_phase);
    /// ```
    pub fn two_phase(mut self, two_phase: bool) -> Self {
        self.two_phase = two_phase;
        self
    }

    /// Sets [`origin`](Self::origin) (`"any"` or `"none"`).
    ///
    /// ```
    /// let options = pqlib::replication::pgoutput::PgOutputOptions::new(["p"]).origin("none");
    /// assert_eq!(options.origin.as_deref(), Some("none"));
    /// ```
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// The options as (name, value) pairs, each value an SQL string literal (single quotes
    /// doubled), ready for `START_REPLICATION SLOT s LOGICAL 0/0 (name value, …)` or, values
    /// as they are, for the SQL functions' `VARIADIC options`. The publication names are one
    /// comma-separated list, each name double-quoted (inner `"` doubled), which pgoutput
    /// reads back exactly (unquoted names would be lower-cased).
    ///
    /// Options left at their defaults are not sent, so that older servers, which reject
    /// options they do not know, accept the list.
    ///
    /// # Errors
    /// Of kind [`BadInput`](crate::error::ErrorKind::BadInput): no publication, an empty
    /// name or origin, a NUL byte, a protocol version outside 1 to 4, or an option the
    /// protocol version does not have (streaming needs 2, two-phase 3, parallel streaming 4).
    ///
    /// ```
    /// use pqlib::replication::pgoutput::PgOutputOptions;
    ///
    /// let pairs = PgOutputOptions::new(["Pub One", "a,b"]).messages(true)
    ///     .start_replication_options()?;
    /// let sql: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} {v}")).collect();
    /// assert_eq!(
    ///     sql.join(", "),
    ///     r#"proto_version '1', publication_names '"Pub One","a,b"', messages 'true'"#
    /// );
    /// assert!(PgOutputOptions::new(Vec::<String>::new()).start_replication_options().is_err());
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    #[doc(alias = "START_REPLICATION")]
    pub fn start_replication_options(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .option_values()?
            .into_iter()
            .map(|(name, value)| (name, literal(&value)))
            .collect())
    }

    /// The options as (name, value) pairs with the values unquoted, for the SQL functions
    /// (`pg_logical_slot_peek_binary_changes(slot, NULL, NULL, VARIADIC options)`, values
    /// passed as parameters). Checked as in
    /// [`start_replication_options`](Self::start_replication_options).
    ///
    /// ```
    /// use pqlib::replication::pgoutput::PgOutputOptions;
    ///
    /// let pairs = PgOutputOptions::new(["it's"]).option_values()?;
    /// assert_eq!(pairs[1], ("publication_names".to_string(), r#""it's""#.to_string()));
    /// # Ok::<(), pqlib::Error>(())
    /// ```
    pub fn option_values(&self) -> Result<Vec<(String, String)>> {
        self.check()?;
        let names: Vec<String> = self
            .publication_names
            .iter()
            .map(|name| format!("\"{}\"", name.replace('"', "\"\"")))
            .collect();
        let mut pairs = vec![
            ("proto_version".to_owned(), self.proto_version.to_string()),
            ("publication_names".to_owned(), names.join(",")),
        ];
        let mut push = |name: &str, value: &str| pairs.push((name.to_owned(), value.to_owned()));
        if self.binary {
            push("binary", "true");
        }
        if self.messages {
            push("messages", "true");
        }
        match self.streaming {
            Streaming::Off => {}
            // Servers 14 and 15 take a boolean; "on" is one of its spellings.
            Streaming::On => push("streaming", "on"),
            Streaming::Parallel => push("streaming", "parallel"),
        }
        if self.two_phase {
            push("two_phase", "true");
        }
        if let Some(origin) = &self.origin {
            push("origin", origin);
        }
        Ok(pairs)
    }

    fn check(&self) -> Result<()> {
        let version = self.proto_version;
        if !(1..=4).contains(&version) {
            return Err(Error::bad_input(format!(
                "pgoutput proto_version {version}: pqlib decodes versions 1 to 4"
            )));
        }
        if self.publication_names.is_empty() {
            return Err(Error::bad_input(
                "pgoutput needs at least one publication name",
            ));
        }
        for name in &self.publication_names {
            if name.is_empty() {
                return Err(Error::bad_input("an empty pgoutput publication name"));
            }
            if name.contains('\0') {
                return Err(Error::bad_input(format!(
                    "the pgoutput publication name {name:?} contains a NUL byte"
                )));
            }
        }
        if let Some(origin) = &self.origin {
            if origin.is_empty() || origin.contains('\0') {
                return Err(Error::bad_input(format!(
                    "the pgoutput origin {origin:?} is empty or contains a NUL byte"
                )));
            }
        }
        let needs = |what: &str, min: u32| {
            Err(Error::bad_input(format!(
                "pgoutput {what} needs proto_version {min} or higher, not {version}"
            )))
        };
        match self.streaming {
            Streaming::On if version < 2 => return needs("streaming", 2),
            Streaming::Parallel if version < 4 => return needs("parallel streaming", 4),
            _ => {}
        }
        if self.two_phase && version < 3 {
            return needs("two_phase", 3);
        }
        Ok(())
    }

    /// A [`Decoder`] for the messages these options make the server send.
    ///
    /// ```
    /// use pqlib::replication::pgoutput::PgOutputOptions;
    /// let decoder = PgOutputOptions::new(["pub"]).decoder();
    /// assert_eq!(decoder.proto_version(), 1);
    /// ```
    pub fn decoder(&self) -> Decoder {
        Decoder::new(self.proto_version, self.streaming)
    }
}

/// `value` as an SQL string literal: in single quotes, inner single quotes doubled (the
/// replication command grammar has no backslash escapes).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
