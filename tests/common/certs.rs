//! Test certificates, generated at run time with the `openssl` crate: certificates expire, so
//! none are committed. Used by the TLS, auth and security tests (`#[path]`-included) and by
//! `examples/tls.rs`.
//!
//! One [`TestCerts::generate`] call writes, into a fresh temporary directory:
//!
//! | file | what |
//! |---|---|
//! | `root.crt` | the root CA that signed the server certificate |
//! | `server.crt`, `server.key` | the server: `CN=localhost`, SANs `DNS:localhost`, `IP:127.0.0.1` |
//! | `wrong-root.crt` | an unrelated CA: verifying the server with it must fail |
//! | `client-ca.crt` | the CA the server trusts for client certificates |
//! | `client.crt`, `client.key` | client `CN=postgres`, key in clear (mode 0600) |
//! | `client-enc.crt`, `client-enc.key` | client `CN=postgres`, key encrypted (PKCS#8, AES-256) with [`KEY_PASSPHRASE`] |
//! | `other-client.crt`, `other-client.key` | client `CN=someone_else`, signed by the client CA |
//! | `rogue-client.crt`, `rogue-client.key` | client `CN=postgres`, signed by the wrong CA |
#![allow(dead_code)]

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::symm::Cipher;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Name};

/// The passphrase of `client-enc.key`.
pub const KEY_PASSPHRASE: &str = "pqlib test key passphrase 7f3a";
/// The common name of the root CA that signed the server certificate.
pub const ROOT_CA_NAME: &str = "pqlib test root CA";
/// The common name of the server certificate.
pub const SERVER_NAME: &str = "localhost";

/// Where the generated files are. Cloning copies the paths only.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub dir: PathBuf,
    pub root_ca: PathBuf,
    pub wrong_root_ca: PathBuf,
    pub client_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub encrypted_client_cert: PathBuf,
    pub encrypted_client_key: PathBuf,
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
    pub rogue_client_cert: PathBuf,
    pub rogue_client_key: PathBuf,
}

impl CertFiles {
    /// The paths of the files [`TestCerts::generate`] writes into `dir`.
    pub fn in_dir(dir: PathBuf) -> CertFiles {
        CertFiles {
            root_ca: dir.join("root.crt"),
            wrong_root_ca: dir.join("wrong-root.crt"),
            client_ca: dir.join("client-ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            encrypted_client_cert: dir.join("client-enc.crt"),
            encrypted_client_key: dir.join("client-enc.key"),
            other_client_cert: dir.join("other-client.crt"),
            other_client_key: dir.join("other-client.key"),
            rogue_client_cert: dir.join("rogue-client.crt"),
            rogue_client_key: dir.join("rogue-client.key"),
            dir,
        }
    }
}

/// The generated files; dropping this removes their directory.
pub struct TestCerts {
    pub files: CertFiles,
}

impl std::ops::Deref for TestCerts {
    type Target = CertFiles;

    fn deref(&self) -> &CertFiles {
        &self.files
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.files.dir);
    }
}

/// A path as a conninfo value (the temporary directory has no spaces or quotes).
pub fn path_str(path: &Path) -> &str {
    let s = path.to_str().expect("a UTF-8 temporary path");
    assert!(
        !s.contains([' ', '\'', '\\']),
        "the path needs no quoting: {s}"
    );
    s
}

struct Issuer {
    cert: X509,
    key: PKey<Private>,
}

enum Kind<'a> {
    Ca,
    Server {
        dns: &'a [&'a str],
        ips: &'a [IpAddr],
    },
    Client,
}

impl TestCerts {
    /// Generates every file into a new directory under the system's temp dir.
    pub fn generate(label: &str) -> TestCerts {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pqlib-certs-{}-{label}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating the certificate directory");
        let files = CertFiles::in_dir(dir);
        let certs = TestCerts { files };
        let f = &certs.files;

        let root = make_ca(ROOT_CA_NAME);
        let wrong_root = make_ca("pqlib unrelated CA");
        let client_ca = make_ca("pqlib test client CA");
        write_cert(&f.root_ca, &root.cert);
        write_cert(&f.wrong_root_ca, &wrong_root.cert);
        write_cert(&f.client_ca, &client_ca.cert);

        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let (cert, key) = make_leaf(
            SERVER_NAME,
            &root,
            Kind::Server {
                dns: &[SERVER_NAME],
                ips: &[localhost],
            },
        );
        write_cert(&f.server_cert, &cert);
        write_key(&f.server_key, &key, None);

        for (cert_path, key_path, cn, issuer, passphrase) in [
            (&f.client_cert, &f.client_key, "postgres", &client_ca, None),
            (
                &f.encrypted_client_cert,
                &f.encrypted_client_key,
                "postgres",
                &client_ca,
                Some(KEY_PASSPHRASE),
            ),
            (
                &f.other_client_cert,
                &f.other_client_key,
                "someone_else",
                &client_ca,
                None,
            ),
            (
                &f.rogue_client_cert,
                &f.rogue_client_key,
                "postgres",
                &wrong_root,
                None,
            ),
        ] {
            let (cert, key) = make_leaf(cn, issuer, Kind::Client);
            write_cert(cert_path, &cert);
            write_key(key_path, &key, passphrase);
        }
        certs
    }
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn name(common_name: &str) -> X509Name {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "pqlib tests")
        .unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .unwrap();
    name.build()
}

fn make_ca(common_name: &str) -> Issuer {
    let key = new_key();
    let cert = build(common_name, &key, None, Kind::Ca);
    Issuer { cert, key }
}

fn make_leaf(common_name: &str, issuer: &Issuer, kind: Kind<'_>) -> (X509, PKey<Private>) {
    let key = new_key();
    let cert = build(common_name, &key, Some(issuer), kind);
    (cert, key)
}

/// A certificate valid from an hour ago for a week: long enough for any test run, never
/// worth committing.
fn build(common_name: &str, key: &PKey<Private>, issuer: Option<&Issuer>, kind: Kind<'_>) -> X509 {
    let subject = name(common_name);
    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(120, MsbOption::MAYBE_ZERO, false).unwrap();
    builder
        .set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&subject).unwrap();
    match issuer {
        Some(issuer) => builder.set_issuer_name(issuer.cert.subject_name()),
        None => builder.set_issuer_name(&subject),
    }
    .unwrap();
    builder.set_pubkey(key).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    builder
        .set_not_before(&Asn1Time::from_unix(now - 3600).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(7).unwrap())
        .unwrap();

    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(issuer.map(|i| &*i.cert), None))
        .unwrap();
    builder.append_extension(ski).unwrap();
    if let Some(issuer) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(&issuer.cert), None))
            .unwrap();
        builder.append_extension(aki).unwrap();
    }
    match kind {
        Kind::Ca => {
            builder
                .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            builder
                .append_extension(
                    KeyUsage::new()
                        .critical()
                        .key_cert_sign()
                        .crl_sign()
                        .build()
                        .unwrap(),
                )
                .unwrap();
        }
        Kind::Server { dns, ips } => {
            leaf_usage(&mut builder);
            builder
                .append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
                .unwrap();
            let mut san = SubjectAlternativeName::new();
            for name in dns {
                san.dns(name);
            }
            for ip in ips {
                san.ip(&ip.to_string());
            }
            let san = san
                .build(&builder.x509v3_context(issuer.map(|i| &*i.cert), None))
                .unwrap();
            builder.append_extension(san).unwrap();
        }
        Kind::Client => {
            leaf_usage(&mut builder);
            builder
                .append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap())
                .unwrap();
        }
    }
    let signer = issuer.map_or(key, |i| &i.key);
    builder.sign(signer, MessageDigest::sha256()).unwrap();
    builder.build()
}

fn leaf_usage(builder: &mut openssl::x509::X509Builder) {
    builder
        .append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    builder
        .append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()
                .unwrap(),
        )
        .unwrap();
}

fn write_cert(path: &Path, cert: &X509) {
    fs::write(path, cert.to_pem().unwrap()).expect("writing a certificate");
}

/// Writes a private key as PKCS#8 PEM, encrypted if a passphrase is given, with mode 0600
/// (libpq refuses a client key that others can read).
fn write_key(path: &Path, key: &PKey<Private>, passphrase: Option<&str>) {
    let pem = match passphrase {
        Some(pass) => key
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), pass.as_bytes())
            .unwrap(),
        None => key.private_key_to_pem_pkcs8().unwrap(),
    };
    write_private(path, &pem);
}

/// Creates `path` with mode 0600 and writes `bytes` to it.
pub fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;

    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).expect("creating a private file");
    file.write_all(bytes).expect("writing a private file");
}
