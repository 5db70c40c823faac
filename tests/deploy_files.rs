//! The deployment files agree with the code: the Dockerfile, fly.toml, railway.json and
//! .env.example use the server's port, health path, drain timeout and call limit, give shutdown
//! enough time, and build everything the binary embeds.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callbridge::config::{self, Config};
use callbridge::server::{HEALTHZ_PATH, METRICS_PATH};

/// What shutdown may take beyond DRAIN_TIMEOUT: the server then ends the remaining calls and
/// waits up to 10 s for their tasks (`STOP_GRACE`, private in src/server/mod.rs), up to 2 s for
/// connections to close, and up to 5 s for in-flight store writes (`STORE_GRACE`, private in
/// src/main.rs). Platforms must not SIGKILL before drain + this margin.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(17);
/// Longest `kill_timeout` Fly.io accepts on shared-CPU machines (dedicated CPUs: 24 h).
const FLY_MAX_KILL_TIMEOUT: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// The server configuration a deploy file's environment produces (with placeholders for the
/// required secrets). Fails when a value there does not parse.
fn config_from(file: &str, env: HashMap<String, String>) -> Config {
    let mut env = env;
    env.entry(config::ENV_OPENAI_API_KEY.to_owned()).or_insert_with(|| "sk-fake-deploy-files".to_owned());
    env.entry(config::ENV_TWILIO_AUTH_TOKEN.to_owned()).or_insert_with(|| "fake-auth-token".to_owned());
    Config::from_source(&env).unwrap_or_else(|e| panic!("{file}: its environment does not load: {e}"))
}

// --- fly.toml -------------------------------------------------------------------------------

fn fly() -> toml::Table {
    read("fly.toml").parse().unwrap()
}

fn table<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Table {
    t.get(key).and_then(toml::Value::as_table).unwrap_or_else(|| panic!("fly.toml: no [{key}] table"))
}

/// A Fly duration: whole seconds or a string such as "45s".
fn fly_duration(v: &toml::Value) -> Duration {
    match v {
        toml::Value::Integer(s) => Duration::from_secs(u64::try_from(*s).unwrap()),
        toml::Value::String(s) => config::parse_duration(s).unwrap_or_else(|| panic!("bad duration {s:?}")),
        other => panic!("not a duration: {other:?}"),
    }
}

fn fly_env() -> HashMap<String, String> {
    let fly = fly();
    let Some(env) = fly.get("env").and_then(toml::Value::as_table) else {
        return HashMap::new();
    };
    env.iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap_or_else(|| panic!("fly.toml: [env] {k} must be a string"));
            (k.clone(), v.to_owned())
        })
        .collect()
}

fn fly_config() -> Config {
    config_from("fly.toml", fly_env())
}

fn int(t: &toml::Table, key: &str) -> i64 {
    t.get(key)
        .and_then(toml::Value::as_integer)
        .unwrap_or_else(|| panic!("fly.toml: {key} is not an integer"))
}

#[test]
fn fly_service_uses_the_server_port_and_health_path() {
    let fly = fly();
    let service = table(&fly, "http_service");
    assert_eq!(int(service, "internal_port"), i64::from(config::DEFAULT_PORT));
    // PORT, if set, is the default, and the environment as a whole loads.
    if let Some(port) = fly_env().get(config::ENV_PORT) {
        assert_eq!(port, &config::DEFAULT_PORT.to_string(), "fly.toml [env] {}", config::ENV_PORT);
    }
    assert_eq!(i64::from(fly_config().port), int(service, "internal_port"));

    let checks = service.get("checks").and_then(toml::Value::as_array).expect("[[http_service.checks]]");
    assert!(!checks.is_empty(), "fly.toml: no http_service checks");
    for check in checks {
        let check = check.as_table().unwrap();
        assert_eq!(check.get("path").and_then(toml::Value::as_str), Some(HEALTHZ_PATH));
        assert_eq!(
            check.get("method").and_then(toml::Value::as_str).map(str::to_uppercase).as_deref(),
            Some("GET")
        );
    }
}

#[test]
fn fly_kill_timeout_covers_the_drain() {
    let fly = fly();
    assert_eq!(fly.get("kill_signal").and_then(toml::Value::as_str), Some("SIGTERM"));
    let kill = fly_duration(fly.get("kill_timeout").expect("fly.toml: kill_timeout"));
    assert!(
        kill >= config::DEFAULT_DRAIN_TIMEOUT + SHUTDOWN_MARGIN,
        "kill_timeout {kill:?} < default drain {:?} + {SHUTDOWN_MARGIN:?}",
        config::DEFAULT_DRAIN_TIMEOUT
    );
    let drain = fly_config().drain_timeout;
    if let Some(set) = fly_env().get(config::ENV_DRAIN_TIMEOUT) {
        assert!(config::parse_duration(set).is_some(), "[env] {} = {set:?}", config::ENV_DRAIN_TIMEOUT);
    }
    assert!(
        drain + SHUTDOWN_MARGIN <= kill,
        "DRAIN_TIMEOUT {drain:?} + {SHUTDOWN_MARGIN:?} > kill_timeout {kill:?}"
    );
    assert!(kill <= FLY_MAX_KILL_TIMEOUT, "kill_timeout {kill:?} is above Fly's limit");
}

#[test]
fn fly_connection_limit_is_the_call_limit() {
    let fly = fly();
    let concurrency = table(table(&fly, "http_service"), "concurrency");
    assert_eq!(concurrency.get("type").and_then(toml::Value::as_str), Some("connections"));
    let hard = int(concurrency, "hard_limit");
    let soft = int(concurrency, "soft_limit");
    let max_calls = fly_config().max_calls;
    if !fly_env().contains_key(config::ENV_MAX_CALLS) {
        assert_eq!(max_calls, config::DEFAULT_MAX_CALLS);
    }
    assert_eq!(hard, i64::try_from(max_calls).unwrap(), "hard_limit must equal MAX_CALLS");
    assert!(0 < soft && soft < hard, "soft_limit {soft} must be below hard_limit {hard}");
}

#[test]
fn fly_never_autostops_machines_with_live_calls() {
    let fly = fly();
    let service = table(&fly, "http_service");
    match service.get("auto_stop_machines") {
        Some(toml::Value::String(s)) => assert_eq!(s, "off"),
        Some(toml::Value::Boolean(b)) => assert!(!b),
        other => panic!("auto_stop_machines must be \"off\" (the default stops machines), got {other:?}"),
    }
    assert!(int(service, "min_machines_running") >= 1);
    if let Some(metrics) = fly.get("metrics").and_then(toml::Value::as_table) {
        assert_eq!(metrics.get("path").and_then(toml::Value::as_str), Some(METRICS_PATH));
        assert_eq!(int(metrics, "port"), int(service, "internal_port"));
    }
}

// --- railway.json ---------------------------------------------------------------------------

#[test]
fn railway_health_check_and_draining() {
    let railway: serde_json::Value = serde_json::from_str(&read("railway.json")).unwrap();
    assert_eq!(railway["build"]["builder"], "DOCKERFILE");
    let deploy = &railway["deploy"];
    assert_eq!(deploy["healthcheckPath"], HEALTHZ_PATH);
    assert!(deploy["healthcheckTimeout"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(deploy["restartPolicyType"], "ON_FAILURE");
    assert!(deploy["restartPolicyMaxRetries"].as_u64().is_some_and(|n| n > 0));
    // Railway's parser wants numbers here, not strings.
    let draining = deploy["drainingSeconds"].as_u64().expect("deploy.drainingSeconds as a number");
    assert!(
        Duration::from_secs(draining) >= config::DEFAULT_DRAIN_TIMEOUT + SHUTDOWN_MARGIN,
        "drainingSeconds {draining} < default drain {:?} + {SHUTDOWN_MARGIN:?}",
        config::DEFAULT_DRAIN_TIMEOUT
    );
    assert!(deploy["overlapSeconds"].as_u64().is_some(), "deploy.overlapSeconds as a number");
}

// --- Dockerfile -----------------------------------------------------------------------------

/// Dockerfile instructions as (keyword, arguments), continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (current.is_empty() && trimmed.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                out.push((keyword.to_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

/// The instructions of the last stage (the image that runs).
fn runtime_stage() -> Vec<(String, String)> {
    let all = dockerfile();
    let last_from = all.iter().rposition(|(k, _)| k == "FROM").expect("a FROM");
    all[last_from..].to_vec()
}

fn args_of<'a>(stage: &'a [(String, String)], keyword: &str) -> Vec<&'a str> {
    stage.iter().filter(|(k, _)| k == keyword).map(|(_, a)| a.as_str()).collect()
}

#[test]
fn dockerfile_runtime_image() {
    let stage = runtime_stage();
    let exposed: Vec<&str> = args_of(&stage, "EXPOSE").iter().flat_map(|a| a.split_whitespace()).collect();
    assert!(exposed.contains(&config::DEFAULT_PORT.to_string().as_str()), "EXPOSE {exposed:?}");

    let env: HashMap<String, String> = args_of(&stage, "ENV")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect();
    assert_eq!(env.get(config::ENV_PORT), Some(&config::DEFAULT_PORT.to_string()), "ENV {env:?}");
    assert_eq!(config_from("Dockerfile", env).port, config::DEFAULT_PORT);

    assert_eq!(args_of(&stage, "STOPSIGNAL"), ["SIGTERM"]);
    let health = args_of(&stage, "HEALTHCHECK");
    assert_eq!(health.len(), 1, "one HEALTHCHECK");
    assert!(health[0].contains(HEALTHZ_PATH), "HEALTHCHECK {:?}", health[0]);

    let user = *args_of(&stage, "USER").last().expect("a USER in the runtime stage");
    let name = user.split(':').next().unwrap_or_default();
    assert!(!name.is_empty() && name != "root" && name != "0", "runtime user {user:?} must not be root");
}

#[test]
fn dockerfile_builds_locked_release() {
    let all = dockerfile();
    let runs = args_of(&all, "RUN");
    assert!(runs.iter().any(|r| r.contains("cargo build --release --locked")), "RUN {runs:?}");
    assert!(args_of(&all, "FROM").len() >= 2, "multi-stage build");
}

/// Top-level folders that src/ embeds with include_bytes!/include_str!.
fn embedded_roots() -> BTreeSet<String> {
    fn walk(dir: &Path, found: &mut BTreeSet<String>, root: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found, root);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for marker in ["include_bytes!(\"", "include_str!(\""] {
                    for (at, _) in text.match_indices(marker) {
                        let rest = &text[at + marker.len()..];
                        let Some(end) = rest.find('"') else { continue };
                        let target = path.parent().unwrap().join(&rest[..end]);
                        let target = std::fs::canonicalize(&target)
                            .unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), target.display()));
                        let rel = target.strip_prefix(root).unwrap();
                        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
                        found.insert(top);
                    }
                }
            }
        }
    }
    let root = std::fs::canonicalize(root()).unwrap();
    let mut found = BTreeSet::new();
    walk(&root.join("src"), &mut found, &root);
    found
}

#[test]
fn dockerfile_copies_what_the_binary_embeds() {
    let all = dockerfile();
    let copied: Vec<&str> = args_of(&all, "COPY")
        .iter()
        .filter(|a| !a.starts_with("--from"))
        .filter_map(|a| a.split_whitespace().next())
        .collect();
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(|l| l.trim().trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for dir in embedded_roots() {
        assert!(
            copied.iter().any(|c| c.trim_end_matches('/') == dir),
            "src/ embeds files from {dir}/ but the Dockerfile does not COPY it (COPY {copied:?})"
        );
        assert!(!ignored.contains(&dir), ".dockerignore excludes {dir}/, which src/ embeds");
    }
}

/// The HEALTHCHECK command (exec form), run against a stand-in server on $PORT: exit 0 on a 200
/// answer to `GET /healthz`, non-zero on 503.
#[test]
fn dockerfile_healthcheck_command_works() {
    let stage = runtime_stage();
    let health = args_of(&stage, "HEALTHCHECK")[0];
    let json = &health[health.find("CMD").expect("HEALTHCHECK ... CMD [...]") + 3..];
    let argv: Vec<String> = serde_json::from_str(json.trim()).expect("HEALTHCHECK CMD in exec (JSON) form");

    for (status, ok) in [("200 OK", true), ("503 Service Unavailable", false)] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            // Read the whole header, as a real server does before it answers.
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && !line.trim_end().is_empty() {
                line.clear();
            }
            let mut stream = stream;
            write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").unwrap();
            request_line
        });
        let result = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env(config::ENV_PORT, port.to_string())
            .status()
            .unwrap();
        let request_line = server.join().unwrap();
        assert_eq!(request_line.split_whitespace().take(2).collect::<Vec<_>>(), ["GET", HEALTHZ_PATH]);
        assert_eq!(result.success(), ok, "health check against {status}: {result}");
    }
}

// --- .env.example and ignore files ----------------------------------------------------------

/// Every variable src/config.rs reads (`pub const ENV_*: &str = "NAME";`).
fn config_variables() -> Vec<String> {
    read("src/config.rs")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const ENV_"))
        .filter_map(|l| l.split_once("= \"").map(|(_, v)| v))
        .filter_map(|v| v.split_once('"').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn env_example_lists_every_variable() {
    let names = config_variables();
    assert!(names.contains(&config::ENV_OPENAI_API_KEY.to_owned()), "parsed {names:?}");
    let example = read(".env.example");
    let listed: BTreeSet<&str> = example
        .lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for name in &names {
        assert!(listed.contains(name.as_str()), ".env.example does not mention {name}");
    }
    // Placeholders only.
    for line in example.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some((k, v)) = line.split_once('=') {
            assert!(
                v.contains("fake") || v.contains("example") || (!k.contains("KEY") && !k.contains("TOKEN")),
                ".env.example {k} does not look like a placeholder"
            );
        }
    }
}

#[test]
fn env_files_stay_out_of_git_and_images() {
    let gitignore = read(".gitignore");
    assert!(gitignore.lines().any(|l| l.trim() == ".env"), ".gitignore must list .env");
    let dockerignore = read(".dockerignore");
    assert!(dockerignore.lines().any(|l| l.trim() == ".env"), ".dockerignore must list .env");
}
