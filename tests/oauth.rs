//! OAuth authentication end to end (libpq 18, server 18): `pqlib::oauth`'s bearer-token hook
//! against a PostgreSQL 18 server whose validator module (`oauth/validator.c`, compiled now
//! with the `cc` crate against the server's headers) accepts exactly one token.
//!
//! The hook is process-wide, so the tests here take turns (`TURN`). With an older libpq,
//! `pqlib::oauth` does not exist and every test reports SKIPPED.
#![cfg(unix)]

mod common;

/// The token the validator accepts, and the role it says the token belongs to.
#[cfg(libpq_18)]
const GOOD_TOKEN: &str = "pqlib-good-token";
#[cfg(libpq_18)]
const ROLE: &str = "pqlib_oauth";
/// The issuer in `pg_hba.conf` and the client's `oauth_issuer`; never contacted.
#[cfg(libpq_18)]
const ISSUER: &str = "https://issuer.pqlib.test";
#[cfg(libpq_18)]
const SCOPE: &str = "openid pqlib";

/// Runs the libpq 18 body of a test, or reports SKIPPED with an older libpq.
macro_rules! oauth_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            if !common::libpq_at_least(18, "OAuth") {
                return;
            }
            #[cfg(libpq_18)]
            {
                let _deadline = common::deadline(common::TEST_DEADLINE);
                let Some(server) = with_libpq_18::server() else {
                    return;
                };
                let _turn = with_libpq_18::take_turn();
                with_libpq_18::$name(server);
            }
        }
    };
}

oauth_test!(a_good_token_connects_as_its_role);
oauth_test!(a_wrong_token_fails_with_the_servers_message);
oauth_test!(a_hook_error_fails_the_connection);
oauth_test!(a_token_with_a_nul_byte_or_none_is_refused_not_truncated);
oauth_test!(a_panicking_hook_fails_only_its_connection);
oauth_test!(not_handled_falls_through_to_libpqs_flow);
oauth_test!(other_auth_data_goes_to_libpqs_default_hook);
oauth_test!(the_async_client_uses_the_hook);

#[cfg(libpq_18)]
mod with_libpq_18 {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
    use std::time::Duration;

    use pqlib::oauth::{self, BearerTokenRequest};
    use pqlib::tempdb::TempCluster;
    use pqlib::{Config, Connection};

    use super::{GOOD_TOKEN, ISSUER, ROLE, SCOPE, common};

    /// The hook is process-wide: one test at a time sets it and connects.
    static TURN: Mutex<()> = Mutex::new(());

    pub fn take_turn() -> MutexGuard<'static, ()> {
        let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        oauth::clear_bearer_token_hook();
        turn
    }

    /// The shared server 18 with the validator.
    pub struct Server {
        port: u16,
    }

    /// Started on first use, stopped (and its files removed) when the binary exits. `None`
    /// after reporting why there is no PostgreSQL 18 server.
    pub fn server() -> Option<&'static Server> {
        static SERVER: OnceLock<Option<Server>> = OnceLock::new();
        SERVER.get_or_init(start_server).as_ref()
    }

    fn start_server() -> Option<Server> {
        let bin_dir = common::server_of(18)?;
        let dir = ModuleDir::new();
        let module = compile_validator(&bin_dir, &dir.0);
        let cluster = TempCluster::builder()
            .bin_dir(&bin_dir)
            .config(format!(
                "oauth_validator_libraries = '{}'",
                module.to_str().expect("a UTF-8 temporary directory")
            ))
            .hba("local all all trust")
            .hba(format!(
                "host all all 127.0.0.1/32 oauth issuer=\"{ISSUER}\" scope=\"{SCOPE}\""
            ))
            .start()
            .expect("a PostgreSQL 18 server with the OAuth validator");
        let mut admin = Connection::connect(&cluster.conninfo()).unwrap();
        admin
            .batch_execute(&format!("CREATE ROLE {ROLE} LOGIN"))
            .unwrap();
        let port = cluster.port();
        // The cluster first (it stops the server), then the module's directory.
        common::drop_at_exit(dir);
        common::drop_at_exit(cluster);
        Some(Server { port })
    }

    /// A temporary directory the server's user can read (the servers run as `postgres` or
    /// `nobody` when the tests run as root), removed on drop.
    struct ModuleDir(PathBuf);

    impl ModuleDir {
        fn new() -> ModuleDir {
            use std::os::unix::fs::PermissionsExt;
            let dir =
                std::env::temp_dir().join(format!("pqlib-oauth-validator-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            ModuleDir(dir)
        }
    }

    impl Drop for ModuleDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The host's target triple, which `cc` needs outside a build script.
    fn target() -> String {
        let arch = std::env::consts::ARCH;
        if cfg!(target_os = "macos") {
            format!("{arch}-apple-darwin")
        } else if cfg!(target_env = "musl") {
            format!("{arch}-unknown-linux-musl")
        } else {
            format!("{arch}-unknown-linux-gnu")
        }
    }

    /// Compiles `oauth/validator.c` against the headers of the server in `bin_dir` into a
    /// shared object in `dir`, and returns its path.
    fn compile_validator(bin_dir: &Path, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let install = bin_dir.parent().expect("bin_dir is <install>/bin");
        let include = install.join("include/server");
        assert!(
            include.join("libpq/oauth.h").exists(),
            "no server headers in {}",
            include.display()
        );
        let source = dir.join("validator.c");
        std::fs::write(&source, include_str!("oauth/validator.c")).unwrap();
        let module = dir.join("pqlib_oauth_validator.so");
        let target = target();
        let compiler = cc::Build::new()
            .target(&target)
            .host(&target)
            .opt_level(0)
            .debug(false)
            .pic(true)
            .cargo_metadata(false)
            .cargo_warnings(false)
            .emit_rerun_if_env_changed(false)
            .try_get_compiler()
            .expect("a C compiler");
        let mut command = compiler.to_command();
        command
            .arg("-shared")
            .arg("-I")
            .arg(&include)
            .arg("-o")
            .arg(&module)
            .arg(&source);
        let (status, output) = common::run_bounded(command, Duration::from_secs(120));
        assert!(
            status.success(),
            "compiling the validator failed ({status}):\n{output}"
        );
        std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o755)).unwrap();
        module
    }

    impl Server {
        /// OAuth over TCP as `user`, with a bounded connect.
        fn config(&self, user: &str) -> Config {
            let mut config = Config::new();
            config
                .host("127.0.0.1")
                .port(self.port)
                .user(user)
                .dbname("postgres")
                .connect_timeout(Duration::from_secs(20))
                .oauth_issuer(ISSUER)
                .oauth_client_id("pqlib-suite");
            config
        }

        /// Connects as [`ROLE`] on a thread of its own, failing the test if that hangs.
        fn connect_as(&self, user: &str) -> pqlib::Result<Connection> {
            let config = self.config(user);
            common::bounded("an OAuth connection", Duration::from_secs(60), move || {
                config.connect()
            })
        }

        fn connect(&self) -> pqlib::Result<Connection> {
            self.connect_as(ROLE)
        }
    }

    /// What the hook was asked, one entry per call.
    #[derive(Debug, Clone, PartialEq)]
    struct Asked {
        openid_configuration: String,
        scope: Option<String>,
        host: Option<String>,
        port: Option<String>,
        user: Option<String>,
        dbname: Option<String>,
        issuer: Option<String>,
        client_id: Option<String>,
    }

    fn asked(request: &BearerTokenRequest<'_>) -> Asked {
        Asked {
            openid_configuration: request.openid_configuration(),
            scope: request.scope(),
            host: request.host(),
            port: request.port(),
            user: request.user(),
            dbname: request.dbname(),
            issuer: request.oauth_issuer(),
            client_id: request.oauth_client_id(),
        }
    }

    /// Installs a hook that records each request and answers with `answer`.
    fn recording_hook(
        answer: Result<Option<&'static str>, &'static str>,
    ) -> Arc<Mutex<Vec<Asked>>> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        oauth::set_bearer_token_hook(move |request| {
            seen.lock().unwrap().push(asked(request));
            answer.map(|token| token.map(str::to_owned))
        });
        calls
    }

    fn count(calls: &Mutex<Vec<Asked>>) -> usize {
        calls.lock().unwrap().len()
    }

    fn current_user(conn: &mut Connection) -> String {
        conn.query_one("SELECT current_user::text", &[])
            .unwrap()
            .get(0)
    }

    pub fn a_good_token_connects_as_its_role(server: &Server) {
        let calls = recording_hook(Ok(Some(GOOD_TOKEN)));
        assert!(oauth::has_bearer_token_hook());
        let mut conn = server.connect().expect("the good token is accepted");
        assert_eq!(current_user(&mut conn), ROLE);
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(
            calls[0],
            Asked {
                openid_configuration: format!("{ISSUER}/.well-known/openid-configuration"),
                scope: Some(SCOPE.into()),
                host: Some("127.0.0.1".into()),
                port: Some(server.port.to_string()),
                user: Some(ROLE.into()),
                dbname: Some("postgres".into()),
                issuer: Some(ISSUER.into()),
                client_id: Some("pqlib-suite".into()),
            }
        );
        drop(conn);
        oauth::clear_bearer_token_hook();
        assert!(!oauth::has_bearer_token_hook());
    }

    pub fn a_wrong_token_fails_with_the_servers_message(server: &Server) {
        let calls = recording_hook(Ok(Some("pqlib-wrong-token")));
        let e = server.connect().map(drop).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "OAuth bearer authentication failed for user \"{ROLE}\""
            )),
            "{e}"
        );
        assert_eq!(count(&calls), 1);

        // The good token identifies ROLE, so it does not let anyone log in as another role.
        let calls = recording_hook(Ok(Some(GOOD_TOKEN)));
        let e = server
            .connect_as("postgres")
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OAuth bearer authentication failed for user \"postgres\""),
            "{e}"
        );
        assert_eq!(count(&calls), 1);
    }

    pub fn a_hook_error_fails_the_connection(server: &Server) {
        common::capture_logs();
        let calls = recording_hook(Err("the token cache is empty (hook-error test)"));
        let e = server.connect().map(drop).unwrap_err().to_string();
        assert!(e.contains("user-defined OAuth flow failed"), "{e}");
        // libpq's message cannot carry the reason; pqlib adds it.
        assert!(
            e.contains(
                "(the OAuth bearer token hook failed: the token cache is empty (hook-error test))"
            ),
            "{e}"
        );
        assert_eq!(count(&calls), 1);
        let logs = common::captured_logs();
        assert!(
            logs.contains(
                "pqlib::oauth: the OAuth bearer token hook failed: the token cache is empty \
                 (hook-error test)"
            ),
            "{logs}"
        );
        // The reason belongs to that attempt only: a later failure does not repeat it.
        let calls = recording_hook(Ok(Some("pqlib-wrong-token")));
        let e = server.connect().map(drop).unwrap_err().to_string();
        assert!(!e.contains("token cache is empty"), "{e}");
        assert_eq!(count(&calls), 1);
    }

    pub fn a_token_with_a_nul_byte_or_none_is_refused_not_truncated(server: &Server) {
        common::capture_logs();
        // Truncated at the NUL, this would be the good token and log in.
        let calls = recording_hook(Ok(Some("pqlib-good-token\0-and-more")));
        let e = server.connect().map(drop).unwrap_err().to_string();
        assert!(e.contains("user-defined OAuth flow failed"), "{e}");
        assert!(e.contains("hook returned a token with a NUL byte"), "{e}");
        assert_eq!(count(&calls), 1);
        let logs = common::captured_logs();
        assert!(logs.contains("returned a token with a NUL byte"), "{logs}");

        // An empty token is refused the same way (the server would drop the connection
        // without a word: a bearer token has at least one character).
        let calls = recording_hook(Ok(Some("")));
        let e = server.connect().map(drop).unwrap_err().to_string();
        assert!(e.contains("user-defined OAuth flow failed"), "{e}");
        assert_eq!(count(&calls), 1);
        let logs = common::captured_logs();
        assert!(logs.contains("returned an empty token"), "{logs}");
    }

    pub fn a_panicking_hook_fails_only_its_connection(server: &Server) {
        common::capture_logs();
        oauth::set_bearer_token_hook(|_| -> Result<Option<String>, String> {
            panic!("oauth hook panic on purpose")
        });
        let e = server.connect().map(drop).unwrap_err().to_string();
        assert!(e.contains("user-defined OAuth flow failed"), "{e}");
        assert!(
            e.contains("hook panicked (oauth hook panic on purpose)"),
            "{e}"
        );
        let logs = common::captured_logs();
        assert!(
            logs.contains(
                "the OAuth bearer token hook panicked (oauth hook panic on purpose); the \
                 connection fails"
            ),
            "{logs}"
        );

        // The same hook again fails the same way: the panic left nothing broken behind.
        let e = server.connect().map(drop).unwrap_err().to_string();
        assert!(e.contains("user-defined OAuth flow failed"), "{e}");

        // The next connection with a good hook succeeds.
        let calls = recording_hook(Ok(Some(GOOD_TOKEN)));
        let mut conn = server.connect().expect("a good hook after a panicking one");
        assert_eq!(current_user(&mut conn), ROLE);
        assert_eq!(count(&calls), 1);
    }

    pub fn not_handled_falls_through_to_libpqs_flow(server: &Server) {
        // The hook declines: libpq goes on with its built-in flow, which this libpq does not
        // have (no libpq-oauth module); with it, the issuer does not exist. Either way the
        // connection fails, promptly, saying so.
        let calls = recording_hook(Ok(None));
        let e = server.connect().map(drop).unwrap_err().to_string();
        assert!(e.contains("OAuth"), "{e}");
        if !e.contains("no OAuth flows are available") {
            eprintln!("libpq's built-in OAuth flow is installed here; it failed with: {e}");
        }
        assert_eq!(count(&calls), 1);

        // Without a hook, the same.
        oauth::clear_bearer_token_hook();
        let e2 = server.connect().map(drop).unwrap_err().to_string();
        assert!(e2.contains("OAuth"), "{e2}");
        assert_eq!(count(&calls), 1, "a cleared hook is not asked");
    }

    pub fn other_auth_data_goes_to_libpqs_default_hook(server: &Server) {
        let calls = recording_hook(Ok(Some(GOOD_TOKEN)));
        // A connection attempt installed pqlib's trampoline (it is there before any).
        let mut conn = server.connect().unwrap();
        assert_eq!(current_user(&mut conn), ROLE);
        assert_eq!(count(&calls), 1);
        // SAFETY: reads libpq's hook global, which pqlib wrote once before its first
        // connection attempt.
        let installed = unsafe { pqlib_sys::PQgetAuthDataHook() }.expect("a hook");
        assert_ne!(
            installed as usize,
            pqlib_sys::PQdefaultAuthDataHook as *const () as usize,
            "pqlib's trampoline is installed"
        );
        let mut prompt = pqlib_sys::PGpromptOAuthDevice {
            verification_uri: c"https://issuer.pqlib.test/device".as_ptr(),
            user_code: c"ABCD-EFGH".as_ptr(),
            verification_uri_complete: std::ptr::null(),
            expires_in: 60,
        };
        // SAFETY: the hook's contract: a prompt request with its data, for a live connection.
        let handled = unsafe {
            installed(
                pqlib_sys::PGauthData::PQAUTHDATA_PROMPT_OAUTH_DEVICE,
                conn.as_ptr(),
                (&raw mut prompt).cast(),
            )
        };
        assert_eq!(handled, 0, "libpq's default hook handles nothing");
        assert_eq!(
            count(&calls),
            1,
            "the token hook is not asked for a device prompt"
        );
    }

    pub fn the_async_client_uses_the_hook(server: &Server) {
        let calls = recording_hook(Ok(Some(GOOD_TOKEN)));
        let config = server.config(ROLE);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio::time::timeout(
                Duration::from_secs(60),
                pqlib::tokio::connect_config(&config),
            )
            .await
            .expect("connecting did not hang")
            .expect("the good token is accepted");
            let task = tokio::spawn(connection);
            let row = client
                .query_one("SELECT current_user::text", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), ROLE);
            drop(client);
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        });
        assert_eq!(count(&calls), 1);

        let calls = recording_hook(Ok(Some("pqlib-wrong-token")));
        let e = runtime
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    pqlib::tokio::connect_config(&config),
                )
                .await
            })
            .expect("connecting did not hang")
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "OAuth bearer authentication failed for user \"{ROLE}\""
            )),
            "{e}"
        );
        assert_eq!(count(&calls), 1);

        // A hook's reason reaches the async client's error too (the hook ran on the thread
        // that polled the connection, where the failure is reported).
        let calls = recording_hook(Err("no token for the async client (hook-error test)"));
        let e = runtime
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    pqlib::tokio::connect_config(&config),
                )
                .await
            })
            .expect("connecting did not hang")
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hook failed: no token for the async client (hook-error test)"),
            "{e}"
        );
        assert_eq!(count(&calls), 1);
    }
}
