//! Connects over TLS to a throwaway server with a system libpq while the `openssl` crate is
//! a second, vendored OpenSSL, and checks that `Connection::ssl()` refuses with
//! `Unsupported`. Arguments: a directory holding `server.crt` and `server.key`.

use pqlib::error::ErrorKind;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("a certificate directory"));
    let server = pqlib::tempdb::TempCluster::builder()
        .tls(&dir.join("server.crt"), &dir.join("server.key"), None)
        .hba("host all all 127.0.0.1/32 trust")
        .start()
        .expect("starting a TLS server");
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require gssencmode=disable",
        server.port()
    );
    let conn = pqlib::Connection::connect(&conninfo).expect("connecting over TLS");
    println!("openssl crate: {}", openssl::version::version());
    println!("libpq's TLS protocol: {:?}", conn.ssl_attribute("protocol"));
    match conn.ssl() {
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            println!("ssl() refused as it must: {e}");
        }
        Err(e) => panic!("ssl() failed, but not with Unsupported: {e}"),
        Ok(ssl) => panic!(
            "ssl() wrapped libpq's SSL* for another OpenSSL: {:?}",
            ssl.map(|s| s.version_str())
        ),
    }
    let one: i32 = pqlib::Connection::connect(&conninfo)
        .and_then(|mut c| c.query_one("SELECT 1", &[]))
        .expect("the session works")
        .get(0);
    assert_eq!(one, 1);
}
