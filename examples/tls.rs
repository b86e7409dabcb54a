//! Connect with `sslmode=verify-full` and print what TLS negotiated: protocol, cipher, key
//! size, and the server certificate that libpq verified.
//!
//! With `DATABASE_URL` set, connects there (give it `sslmode=verify-full` and an
//! `sslrootcert`, e.g. `host=db.example.com sslmode=verify-full sslrootcert=root.crt`).
//! Otherwise generates a throwaway CA and server certificate, starts a throwaway server with
//! TLS on 127.0.0.1, and connects to it as `localhost`, verifying the certificate against
//! that CA.
//!
//! ```sh
//! cargo run --example tls
//! DATABASE_URL="host=db.example.com sslmode=verify-full sslrootcert=root.crt" cargo run --example tls
//! ```

// The certificate generator the TLS tests use (with the `openssl` crate).
#[path = "../tests/common/certs.rs"]
mod certs;

use openssl::nid::Nid;
use openssl::x509::X509NameRef;
use pqlib::config::SslMode;
use pqlib::tempdb::TempCluster;
use pqlib::{Config, Connection};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Kept alive until the end of main: the server, and the files it and we read.
    let (config, _server) = match std::env::var("DATABASE_URL") {
        Ok(url) => (url.parse::<Config>()?, None),
        Err(_) => {
            println!("DATABASE_URL is not set: starting a throwaway server with TLS");
            let certs = certs::TestCerts::generate("example");
            let server = TempCluster::builder()
                .tls(&certs.server_cert, &certs.server_key, None)
                .hba("local all all trust")
                .hba("hostssl all all 127.0.0.1/32 trust")
                .start()?;
            let mut config = Config::new();
            config
                // The name the certificate is for; `hostaddr` skips the lookup (which might
                // give ::1, where the throwaway server does not listen).
                .host("localhost")
                .hostaddr("127.0.0.1".parse()?)
                .port(server.port())
                .user(server.user())
                .dbname("postgres")
                .ssl_mode(SslMode::VerifyFull)
                .sslrootcert(certs::path_str(&certs.root_ca));
            (config, Some((server, certs)))
        }
    };
    if config.get("sslmode") != Some("verify-full") {
        println!(
            "note: sslmode is {:?}, not verify-full: the server may not be who it claims",
            config.get("sslmode").unwrap_or("prefer (libpq's default)")
        );
    }
    println!("connecting: {config}");
    let conn = Connection::connect_config(&config)?;

    if !conn.ssl_in_use() {
        println!("connected WITHOUT TLS");
        return Ok(());
    }
    println!("connected with TLS:");
    for name in conn.ssl_attribute_names() {
        let value = conn.ssl_attribute(&name).unwrap_or_default();
        println!("  {name:<12} {value}");
    }

    // The `openssl` feature gives the session itself.
    if let Some(ssl) = conn.ssl()? {
        if let Some(cipher) = ssl.current_cipher() {
            let description = cipher.description();
            let words: Vec<&str> = description.split_whitespace().skip(1).collect();
            println!("  openssl      {}", words.join(" "));
        }
        if let Some(cert) = ssl.peer_certificate() {
            println!("server certificate:");
            println!("  subject      {}", name(cert.subject_name()));
            println!("  issuer       {}", name(cert.issuer_name()));
            println!(
                "  valid        {} to {}",
                cert.not_before(),
                cert.not_after()
            );
            if let Some(names) = cert.subject_alt_names() {
                let names: Vec<String> = names
                    .iter()
                    .map(|n| match (n.dnsname(), n.ipaddress()) {
                        (Some(dns), _) => format!("DNS:{dns}"),
                        (None, Some(ip)) => format!("IP:{}", ip_text(ip)),
                        _ => "other".to_owned(),
                    })
                    .collect();
                println!("  alt names    {}", names.join(", "));
            }
        }
        println!("  verified     {}", ssl.verify_result().error_string());
    }
    Ok(())
}

/// `CN=…, O=…`, most specific entry first.
fn name(name: &X509NameRef) -> String {
    let mut entries: Vec<String> = name
        .entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = String::from_utf8_lossy(entry.data().as_slice()).into_owned();
            if entry.object().nid() == Nid::COMMONNAME {
                format!("CN={value}")
            } else {
                format!("{key}={value}")
            }
        })
        .collect();
    entries.reverse();
    entries.join(", ")
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap()).to_string(),
        _ => format!("{bytes:02x?}"),
    }
}
