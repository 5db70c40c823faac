//! Server (and harness) resource figures: CPU seconds and resident memory from `/proc/PID`,
//! or from a Prometheus `/metrics` page (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, and `callbridge_active_calls` to see calls drain).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on Linux's common ABIs).
const USER_HZ: f64 = 100.0;

/// Longest a `/metrics` fetch may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest `/metrics` response read (bytes).
const METRICS_MAX_BYTES: u64 = 8 << 20;

/// Between sweep runs: poll interval, shortest and longest wait for the server to settle.
const SETTLE_POLL: Duration = Duration::from_millis(500);
const SETTLE_MIN: Duration = Duration::from_secs(1);
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sample {
    /// User + system CPU time since the process started (s).
    pub cpu_s: Option<f64>,
    /// Resident set size (KiB).
    pub rss_kib: Option<u64>,
    /// Calls the server reports as active (`callbridge_active_calls`), if it exports that.
    pub active_calls: Option<f64>,
}

/// Where server figures come from.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerProbe {
    /// Read `/proc/PID/stat` and `/proc/PID/status`.
    pub pid: Option<u32>,
    /// `http://host:port/path` of a Prometheus text page (loopback only).
    pub metrics: Option<(SocketAddr, String)>,
}

impl ServerProbe {
    /// Whether any server figure can be read.
    pub(crate) fn enabled(&self) -> bool {
        self.pid.is_some() || self.metrics.is_some()
    }

    /// `"proc"`, `"metrics"`, or `"proc+metrics"`: where CPU and RSS come from.
    pub(crate) fn source(&self) -> &'static str {
        match (self.pid.is_some(), self.metrics.is_some()) {
            (true, true) => "proc+metrics",
            (true, false) => "proc",
            (false, true) => "metrics",
            (false, false) => "none",
        }
    }

    /// Reads the server now. `/proc` wins for CPU and RSS; `/metrics` fills what is missing and
    /// gives active calls. A failed read leaves fields `None` (the report then omits them).
    pub(crate) async fn sample(&self) -> Sample {
        let mut s = self.pid.map(|pid| proc_sample(&pid.to_string())).unwrap_or_default();
        if let Some((addr, path)) = &self.metrics {
            match fetch_metrics(*addr, path).await {
                Ok(text) => {
                    let m = parse_metrics(&text);
                    s.cpu_s = s.cpu_s.or(m.cpu_s);
                    s.rss_kib = s.rss_kib.or(m.rss_kib);
                    s.active_calls = m.active_calls;
                }
                Err(e) => eprintln!("bench: reading {addr}{path}: {e:#}"),
            }
        }
        s
    }

    /// Waits (1–30 s) until the server reports no active calls (if it says) and its RSS stays
    /// within 1 % between two polls (if known).
    pub(crate) async fn settle(&self) {
        let t0 = tokio::time::Instant::now();
        tokio::time::sleep(SETTLE_MIN).await;
        if !self.enabled() {
            return;
        }
        let mut last = self.sample().await;
        while t0.elapsed() < SETTLE_MAX {
            tokio::time::sleep(SETTLE_POLL).await;
            let now = self.sample().await;
            let idle = now.active_calls.is_none_or(|a| a < 0.5);
            let steady = match (last.rss_kib, now.rss_kib) {
                (Some(a), Some(b)) => a.abs_diff(b) * 100 <= a.max(1),
                _ => true,
            };
            if idle && steady {
                return;
            }
            last = now;
        }
        eprintln!("bench: the server did not settle within {} s; going on", SETTLE_MAX.as_secs());
    }
}

/// This process's own CPU and RSS (`/proc/self`).
pub(crate) fn own_sample() -> Sample {
    proc_sample("self")
}

fn proc_sample(pid: &str) -> Sample {
    let cpu_s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|t| parse_stat_cpu_s(&t));
    let rss_kib =
        std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|t| parse_status_rss_kib(&t));
    Sample { cpu_s, rss_kib, active_calls: None }
}

/// utime + stime (fields 14 and 15 of `/proc/PID/stat`) in seconds. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
pub(crate) fn parse_stat_cpu_s(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After `)`: field 3 (state) is the first; utime is field 14, so skip 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// `VmRSS` of `/proc/PID/status`, in KiB.
pub(crate) fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The figures a Prometheus text page gives (values summed over label sets).
pub(crate) fn parse_metrics(text: &str) -> Sample {
    let (mut cpu, mut rss, mut active) = (None, None, None);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let target = match &line[..name_end] {
            "process_cpu_seconds_total" => &mut cpu,
            "process_resident_memory_bytes" => &mut rss,
            "callbridge_active_calls" => &mut active,
            _ => continue,
        };
        let after_labels = line.rfind('}').map_or(name_end, |i| i + 1);
        if let Some(v) = line[after_labels..].split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            *target = Some(target.unwrap_or(0.0) + v);
        }
    }
    Sample { cpu_s: cpu, rss_kib: rss.map(|b| (b / 1024.0) as u64), active_calls: active }
}

/// Splits `http://host:port/path` into a loopback address and a path.
///
/// # Errors
/// If it is not plain `http://`, has no port, or does not resolve to loopback.
pub(crate) fn parse_metrics_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("--metrics-url must start with http://"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/".to_owned() } else { path.to_owned() };
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .with_context(|| format!("--metrics-url {url:?}: cannot resolve {authority:?} (host:port)"))?
        .collect();
    let addr =
        addrs.into_iter().next().ok_or_else(|| anyhow!("--metrics-url {url:?} resolves to nothing"))?;
    if !addr.ip().is_loopback() {
        bail!("--metrics-url {url:?} is not a loopback address; the harness only measures local servers");
    }
    Ok((addr, path))
}

/// GETs `path` with HTTP/1.0 (so the body is not chunked) and returns the body.
async fn fetch_metrics(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.take(METRICS_MAX_BYTES).read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(METRICS_TIMEOUT, fetch).await.map_err(|_| anyhow!("timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("HTTP status {status:?}");
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        let stat = "4242 (call (bridge) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 \
                    100 2000000 3000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat_cpu_s(stat), Some(3.25));
        assert_eq!(parse_stat_cpu_s("garbage"), None);
        let own = own_sample();
        assert!(own.cpu_s.is_some() && own.rss_kib.is_some_and(|r| r > 0), "{own:?}");
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tcallbridge\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss_kib(status), Some(12345));
        assert_eq!(parse_status_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn prometheus_text() {
        let text = "# HELP process_cpu_seconds_total CPU\n# TYPE process_cpu_seconds_total counter\n\
                    process_cpu_seconds_total 12.5\nprocess_resident_memory_bytes 2.097152e7\n\
                    callbridge_active_calls 3\ncallbridge_calls_total{reason=\"provider_stop\"} 9\n\
                    other_metric{a=\"}\"} 1\n";
        let s = parse_metrics(text);
        assert_eq!(s.cpu_s, Some(12.5));
        assert_eq!(s.rss_kib, Some(20480));
        assert_eq!(s.active_calls, Some(3.0));
        assert_eq!(parse_metrics("callbridge_active_calls 0\n").cpu_s, None);
    }

    #[test]
    fn metrics_urls_must_be_loopback_http() {
        let (addr, path) = parse_metrics_url("http://127.0.0.1:9000/metrics").unwrap();
        assert_eq!((addr.port(), path.as_str()), (9000, "/metrics"));
        assert_eq!(parse_metrics_url("http://127.0.0.1:9000").unwrap().1, "/");
        assert!(parse_metrics_url("https://127.0.0.1:9000/metrics").is_err());
        assert!(parse_metrics_url("http://127.0.0.1/metrics").is_err(), "no port");
        assert!(parse_metrics_url("http://10.1.2.3:80/metrics").is_err(), "not loopback");
    }
}
