//! The HTTP surface: media-stream WebSocket upgrades, health, readiness and metrics, served by
//! axum on a hyper accept loop that times out slow or stalled requests and upgrades.
//!
//! | route | what |
//! |---|---|
//! | `GET /media/{twilio,signalwire}` (WS) | a provider media stream → one call |
//! | `GET /health` | `{"status":"healthy","activeCalls":N,"uptime":S}` |
//! | `GET /healthz` | liveness: 200 while the process runs |
//! | `GET /readyz` | readiness: 503 while draining |
//! | `GET /metrics` | Prometheus text format |
//! | `/v1/…` | the bearer-token API ([`api`]) |

pub mod api;
pub mod control;
mod log_throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::core::telephony::Dialect;
use crate::driver::{self, Shared};
use crate::metrics as m;
use log_throttle::LogThrottle;

/// Bytes buffered for writing to a provider socket before a send waits (one call's outbound
/// burst is a few frames of about 300 bytes each).
const PROVIDER_WRITE_BUFFER: usize = 8 * 1024;
/// Read chunk for a provider socket: a 20 ms media message is about 400 bytes (L16 24 kHz:
/// about 1.4 KiB); larger messages still fit, the buffer grows up to the message limit.
const PROVIDER_READ_BUFFER: usize = 4 * 1024;
/// Liveness route (the deploy files' health checks point here).
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness route: 503 while draining.
pub const READYZ_PATH: &str = "/readyz";
/// Prometheus scrape route.
pub const METRICS_PATH: &str = "/metrics";

/// How long shutdown waits for call tasks after telling them to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

struct AppState {
    shared: Arc<Shared>,
    control: Option<Arc<control::Control>>,
    metrics: PrometheusHandle,
    started: Instant,
}

/// What the server offers beyond media streams, health and metrics.
#[derive(Clone, Default)]
pub struct Services {
    /// The `/v1` read API.
    pub api: api::ApiState,
    /// Webhooks, outbound calls and upgrade checks; `None` serves media streams unchecked
    /// (tests, the demo and the bench harness).
    pub control: Option<Arc<control::Control>>,
}

/// The router (exposed for tests that drive it without a socket).
pub fn router(shared: Arc<Shared>, metrics: PrometheusHandle, services: Services) -> Router {
    let state =
        Arc::new(AppState { shared, metrics, started: Instant::now(), control: services.control.clone() });
    let mut router = Router::new()
        .route("/media/{provider}", get(media))
        .route("/health", get(health))
        .route(HEALTHZ_PATH, get(|| async { "ok" }))
        .route(READYZ_PATH, get(readyz))
        .route(METRICS_PATH, get(render_metrics))
        .with_state(state)
        .merge(api::routes(services.api));
    if let Some(c) = services.control {
        router = router.merge(control::routes(c));
    }
    router
}

async fn media(
    Path(provider): Path<String>,
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(dialect) = Dialect::from_name(&provider) else {
        return (StatusCode::NOT_FOUND, "unknown provider").into_response();
    };
    if let Some(c) = &st.control {
        if let Some(refusal) = c.refuse_upgrade(dialect, &headers, peer) {
            return refusal;
        }
    }
    let slot = match st.shared.try_admit() {
        Ok(slot) => slot,
        Err(reason) => {
            static LOG: LogThrottle = LogThrottle::new();
            if let Some(skipped) = LOG.admit() {
                warn!(reason = reason.as_str(), skipped, "media stream refused");
            }
            m::call_refused(reason);
            return (StatusCode::SERVICE_UNAVAILABLE, reason.as_str()).into_response();
        }
    };
    let max = st.shared.max_message_bytes;
    let tracker = st.shared.tracker.clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(PROVIDER_READ_BUFFER)
        // Frames are fed and flushed once per input, so one write carries several messages.
        .write_buffer_size(PROVIDER_WRITE_BUFFER)
        .max_write_buffer_size(PROVIDER_WRITE_BUFFER + max * 2)
        .on_failed_upgrade(|e| debug!(error = %e, "media upgrade failed"))
        .on_upgrade(move |socket| tracker.track_future(driver::run_call(socket, dialect, slot)))
}

async fn health(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "healthy",
        "activeCalls": st.shared.active_calls(),
        "uptime": st.started.elapsed().as_secs(),
    }))
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if st.shared.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

async fn render_metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render())
}

/// A running server.
pub struct ServerHandle {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop_accept: CancellationToken,
    accept: JoinHandle<()>,
    connections: TaskTracker,
}

/// Starts serving media streams, health and metrics on `listener` (no `/v1` API).
/// `request_timeout` bounds how long a client may take to send request headers (including a
/// WebSocket upgrade).
pub fn start(
    listener: TcpListener,
    shared: Arc<Shared>,
    metrics: PrometheusHandle,
    request_timeout: Duration,
) -> std::io::Result<ServerHandle> {
    start_with(listener, shared, metrics, request_timeout, Services::default())
}

/// [`start`] with the extra [`Services`].
pub fn start_with(
    listener: TcpListener,
    shared: Arc<Shared>,
    metrics: PrometheusHandle,
    request_timeout: Duration,
    services: Services,
) -> std::io::Result<ServerHandle> {
    let addr = listener.local_addr()?;
    let app = router(shared.clone(), metrics, services);
    let stop_accept = CancellationToken::new();
    let connections = TaskTracker::new();
    let accept =
        tokio::spawn(accept_loop(listener, app, stop_accept.clone(), connections.clone(), request_timeout));
    Ok(ServerHandle { addr, shared, stop_accept, accept, connections })
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    connections: TaskTracker,
    request_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // Handlers see the peer (per-IP upgrade budget) as axum's `ConnectInfo`.
        let svc = TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        let stop = stop.clone();
        connections.spawn(async move {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(request_timeout)
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        debug!(%peer, error = %e, "connection error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
        });
    }
}

impl ServerHandle {
    /// State shared with the call tasks.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Graceful shutdown: readiness turns 503 and new streams are refused; active calls get
    /// `drain_timeout` to finish, then are ended; returns once every call task has finished.
    pub async fn shutdown(self, drain_timeout: Duration) {
        self.shared.begin_drain();
        let active = self.shared.active_calls();
        info!(active, drain_ms = drain_timeout.as_millis() as u64, "draining");
        self.shared.tracker.close();
        if tokio::time::timeout(drain_timeout, self.shared.tracker.wait()).await.is_err() {
            let left = self.shared.active_calls();
            warn!(calls = left, "drain time over; ending remaining calls");
            self.shared.stop_calls.cancel();
            if tokio::time::timeout(STOP_GRACE, self.shared.tracker.wait()).await.is_err() {
                warn!("call tasks did not stop in time");
            }
        }
        self.stop_accept.cancel();
        let _ = self.accept.await;
        self.connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.connections.wait()).await;
        info!("drained");
    }
}
