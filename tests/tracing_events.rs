//! With feature `tracing`, connections, statements and COPY emit events; SQL text is
//! recorded, parameter values never are.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Everything the subscriber saw, one line per span or event: target and fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut out = self.0.lock().unwrap();
        let _ = write!(out, "span {}", span.metadata().target());
        span.record(&mut Fields(&mut out));
        out.push('\n');
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut out = self.0.lock().unwrap();
        let _ = write!(out, "event {}", event.metadata().target());
        event.record(&mut Fields(&mut out));
        out.push('\n');
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn statements_and_copy_are_traced_without_parameter_values() {
    let capture = Capture::default();
    let conninfo = common::conninfo();
    tracing::subscriber::with_default(capture.clone(), || {
        let mut conn = pqlib::Connection::connect(&conninfo).unwrap();
        conn.batch_execute("CREATE TEMP TABLE traced (secret text)")
            .unwrap();
        conn.execute("INSERT INTO traced VALUES ($1)", &[&"hunter2-parameter"])
            .unwrap();
        let mut writer = conn.copy_in("COPY traced FROM STDIN").unwrap();
        writer.write_all(b"row\n").unwrap();
        writer.finish().unwrap();
        conn.batch_execute("DO $$ BEGIN RAISE WARNING 'traced warning'; END $$")
            .unwrap();
    });
    let seen = capture.0.lock().unwrap().clone();
    assert!(seen.contains("event pqlib::connect"), "{seen}");
    assert!(
        seen.contains("span pqlib::query kind=\"query\" sql=\"INSERT INTO traced VALUES ($1)\""),
        "{seen}"
    );
    assert!(
        seen.contains("event pqlib::copy message=COPY started direction=\"in\""),
        "{seen}"
    );
    assert!(
        seen.contains("event pqlib::copy message=COPY finished rows=1"),
        "{seen}"
    );
    assert!(
        seen.contains("event pqlib::notice") && seen.contains("traced warning"),
        "{seen}"
    );
    assert!(
        !seen.contains("hunter2-parameter"),
        "a parameter value was recorded:\n{seen}"
    );
}
