//! `escape_literal` / `escape_identifier` on a real libpq connection, without a server:
//! libpq escapes according to the session's encoding and `standard_conforming_strings`,
//! which it learns during the startup handshake, so the target connects once to a fake
//! server (a thread answering the startup packet on a unix socket: AuthenticationOk,
//! ParameterStatus client_encoding=UTF8 and standard_conforming_strings=on, BackendKeyData,
//! ReadyForQuery). Escaping itself never talks to the server.
//!
//! Oracle (exact): an identifier is `"` + text with `"` doubled + `"`; a literal is
//! `'` + text with `'` doubled + `'`, or, if the text holds a backslash, ` E'` + text with
//! `'` and `\` doubled + `'`. Text with a NUL byte is `BadInput`.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Mutex, OnceLock};

use pqlib::Connection;
use pqlib::error::ErrorKind;

fn message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(i32::try_from(body.len() + 4).unwrap()).to_be_bytes());
    out.extend_from_slice(body);
}

fn parameter(out: &mut Vec<u8>, name: &str, value: &str) {
    let mut body = Vec::new();
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(value.as_bytes());
    body.push(0);
    message(out, b'S', &body);
}

/// Answers one client: the startup handshake, then reads until the client goes away.
fn serve(mut client: UnixStream) {
    loop {
        let mut len = [0u8; 4];
        if client.read_exact(&mut len).is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        let mut packet = vec![0u8; len.saturating_sub(4)];
        if client.read_exact(&mut packet).is_err() {
            return;
        }
        let code = packet
            .get(..4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()));
        match code {
            // SSLRequest, GSSENCRequest: not supported here.
            Some(80_877_103 | 80_877_104) => {
                if client.write_all(b"N").is_err() {
                    return;
                }
            }
            _ => break,
        }
    }
    let mut out = Vec::new();
    message(&mut out, b'R', &0i32.to_be_bytes());
    parameter(&mut out, "client_encoding", "UTF8");
    parameter(&mut out, "server_encoding", "UTF8");
    parameter(&mut out, "standard_conforming_strings", "on");
    parameter(&mut out, "server_version", "17.0");
    parameter(&mut out, "integer_datetimes", "on");
    parameter(&mut out, "DateStyle", "ISO, MDY");
    let mut key = Vec::new();
    key.extend_from_slice(&4242i32.to_be_bytes());
    key.extend_from_slice(&1234i32.to_be_bytes());
    message(&mut out, b'K', &key);
    message(&mut out, b'Z', b"I");
    if client.write_all(&out).is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
}

fn connection() -> &'static Mutex<Connection> {
    static CONNECTION: OnceLock<Mutex<Connection>> = OnceLock::new();
    CONNECTION.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pqlib-fuzz-escape-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join(".s.PGSQL.5432");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                std::thread::spawn(move || serve(client));
            }
        });
        let conninfo = format!(
            "host={} port=5432 user=fuzz dbname=fuzz sslmode=disable gssencmode=disable",
            dir.display()
        );
        let conn = Connection::connect(&conninfo).expect("connecting to the fake server");
        // The socket file is no longer needed once connected.
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_dir(&dir);
        Mutex::new(conn)
    })
}

/// The target's oracle: panics (or aborts) on a finding.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let conn = connection().lock().unwrap();
    let identifier = conn.escape_identifier(text);
    let literal = conn.escape_literal(text);
    if text.contains('\0') {
        assert_eq!(identifier.unwrap_err().kind(), ErrorKind::BadInput);
        assert_eq!(literal.unwrap_err().kind(), ErrorKind::BadInput);
        return;
    }
    assert_eq!(
        identifier.unwrap(),
        format!("\"{}\"", text.replace('"', "\"\""))
    );
    let literal = literal.unwrap();
    if text.contains('\\') {
        assert_eq!(
            literal,
            format!(" E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
        );
    } else {
        assert_eq!(literal, format!("'{}'", text.replace('\'', "''")));
    }
}
