//! `Config` parsing (`PQconninfoParse` for `key=value` strings and URIs) and printing.
//!
//! Properties: parsing never panics; `Debug` and `Display` never depend on a password's
//! value (so never show it); what
//! `Display` prints parses back to the same parameters (passwords aside, which it masks);
//! `validate` and `to_string` never panic.

use pqlib::Config;

const SECRETS: [&str; 2] = ["password", "sslpassword"];

/// The target's oracle: panics (or aborts) on a finding.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = text.parse::<Config>() else {
        return;
    };
    let _ = config.validate();
    let debug = format!("{config:?}");
    let display = config.to_string();
    // Printing must not depend on a secret's value: with every secret replaced, Debug and
    // Display are the same.
    let mut masked = config.clone();
    for keyword in SECRETS {
        if config.get(keyword).is_some() {
            masked.param(keyword, "a different secret");
        }
    }
    assert_eq!(debug, format!("{masked:?}"), "Debug depends on a secret");
    assert_eq!(display, masked.to_string(), "Display depends on a secret");
    let reparsed: Config = display
        .parse()
        .unwrap_or_else(|e| panic!("Display output does not parse: {display:?}: {e}"));
    let public = |c: &Config| -> Vec<(String, String)> {
        c.params()
            .filter(|(k, _)| !SECRETS.contains(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    assert_eq!(
        public(&config),
        public(&reparsed),
        "round trip of {display:?}"
    );
}
