//! `callbridge` — thin entry point: parse the command line, load config, run a sub-command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing::{error, info, warn};

use callbridge::auth::StreamTokens;
use callbridge::clients::telephony_rest::TelephonyRest;
use callbridge::clients::tools::Consultant;
use callbridge::config::Config;
use callbridge::demo::{self, DemoOptions, DemoProvider};
use callbridge::driver::{CallControl, Shared, ToolRuntime};
use callbridge::server::Services;
use callbridge::server::api::ApiState;
use callbridge::server::control::{Control, rest_clients};
use callbridge::store::{Store, StoreConfig};
use callbridge::{bench, metrics, server, sim, telemetry};

/// At shutdown, how long in-flight Supabase writes may finish (the rest wait in SQLite).
const STORE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Parser)]
#[command(name = "callbridge", version, about = "Bridges phone calls to the OpenAI Realtime API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default). Configured from the environment; see the README.
    Serve,
    /// Run a whole simulated call on this machine: server + Realtime simulator + a caller
    /// streaming recorded speech, with one normal turn and one barge-in.
    Demo {
        /// Talk to the real OpenAI Realtime API (needs OPENAI_API_KEY) instead of the simulator.
        #[arg(long)]
        live: bool,
        /// Which provider the simulated caller plays.
        #[arg(long, value_enum, default_value_t = ProviderArg::Twilio)]
        provider: ProviderArg,
        /// Convert audio to the model's PCM 24 kHz even when passthrough is possible.
        #[arg(long)]
        transcode: bool,
        /// Where to write the caller-side audio (stereo WAV: left = caller, right = what it heard).
        #[arg(long, default_value = "out/demo-call.wav")]
        wav: PathBuf,
    },
    /// Place one simulated call the way Twilio does: the signed voice webhook, then the media
    /// stream it names (smoke test of a running bridge). Prints what the caller heard; fails
    /// when the call does not connect or closes abnormally.
    Call {
        /// The voice webhook, e.g. `https://bridge.example.com/twiml` (as the bridge's
        /// `PUBLIC_URL` makes it).
        #[arg(long)]
        webhook: String,
        /// The Twilio auth token the bridge checks signatures with.
        #[arg(long, env = "SMOKE_TWILIO_AUTH_TOKEN", hide_env_values = true)]
        auth_token: String,
        /// Connect to this URL instead of the `<Stream url>` (same path; e.g. a local address).
        #[arg(long)]
        connect: Option<String>,
    },
    /// Run the Realtime simulator alone (for tests and benchmarks of other setups).
    SimRealtime {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// Echo mode: every appended audio chunk comes straight back as model audio (for load
        /// tests of the bridge without a model).
        #[arg(long)]
        echo: bool,
        /// With --echo: also run the energy VAD on the caller audio and send speech_started /
        /// speech_stopped (no turns), so the bridge's barge-in can be load-tested
        /// (`callbridge bench --barge-in`).
        #[arg(long, requires = "echo")]
        echo_vad: bool,
    },
    /// Load-test a media-stream endpoint on this machine with many simulated provider calls
    /// (runs on its own runtime with --threads workers).
    Bench(Box<bench::BenchArgs>),
}

#[derive(Clone, Copy, ValueEnum)]
enum ProviderArg {
    /// Twilio, μ-law 8 kHz.
    Twilio,
    /// SignalWire with L16 16 kHz (transcoded to the model's PCM 24 kHz).
    Signalwire,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // ring, not aws-lc: no C build, and one provider for every TLS client in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let command = match cli.command.unwrap_or(Command::Serve) {
        // The harness builds its own runtime, sized by --threads.
        Command::Bench(args) => return exit_code(bench::main(*args)),
        command => command,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callbridge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Serve => serve().await,
            Command::Demo { live, provider, transcode, wav } => {
                let provider = match provider {
                    ProviderArg::Twilio => DemoProvider::Twilio,
                    ProviderArg::Signalwire => DemoProvider::SignalWireL16,
                };
                let opts = DemoOptions {
                    live,
                    provider,
                    force_transcode: transcode,
                    wav: Some(wav),
                    ..Default::default()
                };
                demo::run_and_print(opts).await
            }
            Command::SimRealtime { listen, echo, echo_vad } => sim_realtime(listen, echo, echo_vad).await,
            Command::Call { webhook, auth_token, connect } => {
                smoke_call(&webhook, &auth_token, connect.as_deref()).await
            }
            Command::Bench(_) => Err(anyhow::anyhow!("bench runs on its own runtime")),
        }
    });
    exit_code(result)
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    telemetry::init(cfg.log_json, "info");
    let prometheus = metrics::install().map_err(|e| anyhow::anyhow!("metrics: {e}"))?;
    let listener = tokio::net::TcpListener::bind((cfg.host, cfg.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", cfg.host, cfg.port))?;
    let store = Store::start(StoreConfig::from_settings(&cfg.store, &cfg.upstream.api_key)?)
        .await
        .with_context(|| format!("cannot open the store in {}", cfg.store.data_dir.display()))?;
    let stream_tokens = cfg
        .control
        .validate_signatures
        .then(|| Mutex::new(StreamTokens::new(&cfg.control.stream_token_key, cfg.control.stream_token_ttl)));
    let api_token: Option<Arc<str>> = cfg.api_token.as_deref().map(Into::into);
    let rest = rest_clients(&cfg.control).context("provider REST client")?;
    let tools = Arc::new(tool_runtime(&cfg, &rest)?);
    let mut params = cfg.call.clone();
    params.session.tools = tools.declared().into();
    params.filler_delay = cfg.tools.filler_delay;
    let shared = Arc::new(
        Shared::new(
            cfg.upstream.clone(),
            params,
            cfg.max_message_bytes,
            cfg.max_calls,
            Some(store.notes.clone()),
        )
        .with_control(CallControl { stream_tokens, ..Default::default() })
        .with_tools(tools),
    );
    let control = Control::from_settings(&cfg.control, api_token.clone(), shared.clone(), rest);
    if !cfg.control.validate_signatures {
        warn!(
            "TWILIO_VALIDATE_SIGNATURE=false: media streams and webhooks are NOT authenticated (local development and load tests only)"
        );
    }
    if cfg.api_token.is_none() {
        warn!("API_TOKEN is not set: every /v1 route answers 401");
    }
    let services = Services {
        api: ApiState { token: api_token, store: Some(store.reader()) },
        control: Some(Arc::new(control)),
    };
    let handle = server::start_with(listener, shared, prometheus, cfg.upgrade_timeout, services)?;
    info!(
        addr = %handle.addr,
        max_calls = cfg.max_calls,
        upstream = %cfg.upstream.url,
        supabase = cfg.store.supabase.is_some(),
        data_dir = %cfg.store.data_dir.display(),
        "callbridge listening"
    );
    shutdown_signal().await;
    handle.shutdown(cfg.drain_timeout).await;
    store.shutdown(STORE_GRACE).await;
    Ok(())
}

/// The model's tools as configured: custom tools, `consult` (Anthropic when its key is set,
/// else the OpenAI-compatible API), transfers and the providers' REST clients.
fn tool_runtime(
    cfg: &Config,
    (twilio, signalwire): &(Option<TelephonyRest>, Option<TelephonyRest>),
) -> anyhow::Result<ToolRuntime> {
    let t = &cfg.tools;
    let timeout = cfg.call.tool_timeout;
    let consultant = match &t.anthropic_api_key {
        Some(key) => Consultant::anthropic(&t.anthropic_base_url, key, &t.consult_model, timeout),
        None => {
            Consultant::openai(&cfg.store.openai_base_url, &cfg.upstream.api_key, &t.consult_model, timeout)
        }
    }
    .map_err(|e| anyhow::anyhow!("consult client: {e}"))?;
    Ok(ToolRuntime {
        http: reqwest::Client::builder().build().context("tool HTTP client")?,
        custom: t.custom.clone(),
        consultant: Some(consultant),
        transfer_targets: t.transfer_targets.clone(),
        twilio: twilio.clone(),
        signalwire: signalwire.clone(),
    })
}

async fn smoke_call(webhook: &str, auth_token: &str, connect: Option<&str>) -> anyhow::Result<()> {
    use callbridge::sim::{caller::Step, fixtures, provider_call};
    let script = vec![
        Step::Speak(fixtures::clip("caller_question")?),
        Step::WaitAgentDone {
            quiet: std::time::Duration::from_millis(800),
            timeout: std::time::Duration::from_secs(30),
        },
        Step::HangUp,
    ];
    let report = provider_call::place_call(webhook, auth_token, connect, script).await?;
    let close = report.close.clone();
    println!(
        "{}",
        serde_json::json!({
            "close_code": close.as_ref().map(|c| c.0),
            "close_reason": close.as_ref().map(|c| c.1.clone()),
            "frames_sent": report.media_frames_sent,
            "agent_audio_ms": report.audio_ms_received,
            "marks": report.marks_received,
        })
    );
    match close {
        Some((1000, _)) if report.audio_ms_received > 0 => Ok(()),
        Some((1000, _)) => anyhow::bail!("the call connected but the agent never spoke"),
        other => anyhow::bail!("the call ended abnormally: {other:?}"),
    }
}

async fn sim_realtime(listen: std::net::SocketAddr, echo: bool, echo_vad: bool) -> anyhow::Result<()> {
    telemetry::init(false, "info");
    let mut cfg = demo::sim_config(None)?;
    cfg.echo = echo;
    cfg.echo_vad = echo_vad;
    let handle = sim::realtime::start(cfg, listen).await?;
    info!(url = %handle.url(), "Realtime simulator listening");
    shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM received"),
                    r = tokio::signal::ctrl_c() => { if let Err(e) = r { error!(error = %e, "ctrl-c handler"); } info!("SIGINT received") }
                }
                return;
            }
            Err(e) => warn!(error = %e, "cannot listen for SIGTERM; SIGINT only"),
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        error!(error = %e, "cannot listen for SIGINT");
        std::future::pending::<()>().await;
    }
}
