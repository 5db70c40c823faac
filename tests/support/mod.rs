//! A real PostgreSQL and a real PostgREST-dialect server (`postrust-server`) on loopback, set up
//! by `scripts/supabase-local.sh` (idempotent; installs what is missing on first use).
//!
//! Each test gets its own database with the migration applied, and starts, stops and restarts
//! its own REST server on an ephemeral port.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// JWT secret shared by the REST server and the tests' service-role key (≥ 32 chars).
pub const JWT_SECRET: &str = "callbridge-tests-only-jwt-secret-0123456789";
const AUTHENTICATOR_PASSWORD: &str = "authenticator-local-only";

/// What `scripts/supabase-local.sh` printed.
pub struct PgEnv {
    pub port: u16,
    pub postrust: String,
}

/// Runs the set-up script once per test process.
pub fn pg_env() -> &'static PgEnv {
    static ENV: OnceLock<PgEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("scripts/supabase-local.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/supabase-local.sh");
        assert!(out.status.success(), "scripts/supabase-local.sh failed");
        let vars: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        PgEnv { port: vars["PG_PORT"].parse().unwrap(), postrust: vars["POSTRUST_BIN"].clone() }
    })
}

/// A fresh database with `supabase/migrations/*.sql` and a `leads` table.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn create(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let env = pg_env();
        let name = format!("cb_{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        psql_on(env.port, "postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        psql_on(env.port, "postgres", &format!("CREATE DATABASE {name}"));
        let db = Self { name };
        let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("supabase/migrations");
        let mut files: Vec<_> = std::fs::read_dir(migrations).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            db.psql(&std::fs::read_to_string(f).unwrap());
        }
        // The user's own leads table, as the README describes it.
        db.psql(
            "CREATE TABLE public.leads (
                 id uuid PRIMARY KEY,
                 name text,
                 status text,
                 last_call_sid text,
                 last_call_summary text,
                 updated_at timestamptz
             );
             ALTER TABLE public.leads ENABLE ROW LEVEL SECURITY;
             GRANT SELECT, INSERT, UPDATE ON public.leads TO service_role;",
        );
        db
    }

    /// Runs SQL as the superuser; returns unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        psql_on(pg_env().port, &self.name, sql)
    }

    /// One number from a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.psql(sql).trim().parse().unwrap_or_else(|_| panic!("not a number from {sql}"))
    }

    fn uri(&self) -> String {
        format!("postgres://authenticator:{AUTHENTICATOR_PASSWORD}@127.0.0.1:{}/{}", pg_env().port, self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &pg_env().port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

fn psql_on(port: u16, db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", db, "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql failed: {}\n{sql}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A `postrust` process serving one test database on a fixed loopback port.
pub struct RestServer {
    pub port: u16,
    db_uri: String,
    child: Option<Child>,
}

impl RestServer {
    /// Starts on a free port and waits until it answers.
    pub fn start(db: &TestDb) -> Self {
        let port = free_port();
        let mut s = Self { port, db_uri: db.uri(), child: None };
        s.restart();
        s
    }

    /// The base URL the bridge uses (`SUPABASE_URL` with `SUPABASE_REST_PATH=/`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (connections reset, later ones refused).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("postrust-{}.log", self.port))).unwrap();
        let child = Command::new(&pg_env().postrust)
            .env("PGRST_COMPAT_MODE", "true")
            .env("PGRST_DB_URI", &self.db_uri)
            .env("PGRST_DB_SCHEMAS", "public")
            .env("PGRST_DB_ANON_ROLE", "anon")
            .env("PGRST_JWT_SECRET", JWT_SECRET)
            .env("PGRST_SERVER_HOST", "127.0.0.1")
            .env("PGRST_SERVER_PORT", self.port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postrust");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("postrust did not come up on port {}", self.port);
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An HS256 JWT with `{"role":"service_role"}`: the legacy service-role key shape.
pub fn service_role_jwt() -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"role":"service_role","exp":{exp}}}"#));
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{header}.{claims}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{claims}.{sig}")
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes; returns whether it did.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
