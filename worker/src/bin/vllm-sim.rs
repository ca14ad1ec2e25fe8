//! `vllm-sim`: a strict vLLM + MinerU2.5 simulator for tests, the e2e suite and benchmarks.
//!
//! With `--port 0` the first line on stdout is the bound address (`127.0.0.1:PORT`), so a harness
//! can start it and read where it listens.
//!
//! Endpoints: `GET /health`, `GET /metrics`, `GET /v1/models`, `POST /v1/chat/completions`, and
//! for tests `GET|PUT /admin/faults` (JSON `Faults`: `latency_ms`, `latency_jitter_ms`,
//! `error_rate`, `drop_rate`, `fail_next`, `drop_next`, `retry_after_secs`),
//! `POST /admin/restart` (`{"down_ms": N}`: drop every connection, refuse new ones for N ms) and
//! `GET /admin/stats` (requests, answers per step, deviations, faults, in-flight high-water mark).
//! Deviations are logged at WARN on stderr and counted in `vllm_sim_protocol_deviations_total`.
//!
//! Installed as `vllm` in an image, `vllm serve MODEL [flags]` (or `vllm-sim serve ...`) takes
//! vLLM's own command line instead, with vLLM's defaults (`--host 0.0.0.0 --port 8000`,
//! `VLLM_API_KEY`): the flags the operator's StatefulSet passes, plus those of vLLM's a user may
//! put in the deployment's `extraArgs` (which the operator appends) and the simulator models,
//! i.e. `--max-num-seqs`; any other flag is refused.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Parser;
use mineru_worker::simulator::{self, Faults, Scenario, SimConfig};

#[derive(Debug, Parser)]
#[command(
    name = "vllm-sim",
    about = "Strict vLLM simulator speaking the MinerU2.5 protocol"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Served model name.
    #[arg(long, alias = "served-model-name", default_value = "mineru2.5")]
    model: String,
    #[command(flatten)]
    engine: Engine,
    #[command(flatten)]
    simulation: Simulation,
}

/// What both command lines set: vLLM's own flags the simulator models.
#[derive(Debug, clap::Args)]
struct Engine {
    /// Require `Authorization: Bearer <key>` on /v1 routes.
    #[arg(long, env = "VLLM_API_KEY")]
    api_key: Option<String>,
    /// Requests processed at once; the rest wait (vLLM's --max-num-seqs).
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    /// Longest `max_tokens` accepted.
    #[arg(long, default_value_t = 16384)]
    max_model_len: u64,
}

/// The simulator's own knobs, absent from vLLM's command line (defaults there).
#[derive(Debug, Parser)]
struct Simulation {
    /// Scenario file (YAML or JSON); the built-in one-column page when absent.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Fixed latency per chat answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Extra random latency up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_jitter_ms: u64,
    /// Share (0..=1) of chat requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share (0..=1) of chat requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// `Retry-After` seconds sent with injected 503s.
    #[arg(long)]
    retry_after_secs: Option<u64>,
    /// Seed for the random fault draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `vllm serve`, as the operator runs it (operator/src/reconcile/statefulset.rs `args`).
#[derive(Debug, Parser)]
#[command(name = "vllm", about = "vLLM's command line, served by the simulator")]
enum Vllm {
    /// Serve MODEL over the OpenAI-compatible API.
    Serve(Serve),
}

#[derive(Debug, clap::Args)]
struct Serve {
    /// The model; also its served name unless --served-model-name is given.
    model: String,
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    #[arg(long)]
    served_model_name: Option<String>,
    /// Accepted for the operator's command line; there is no GPU memory to size.
    #[arg(long, value_parser = parse_utilization)]
    gpu_memory_utilization: Option<f64>,
    /// Accepted as the operator passes it; the simulator always answers MinerU2.5's protocol.
    #[arg(long, num_args = 1..)]
    logits_processors: Vec<String>,
    /// Accepted as the operator passes it; the simulator runs on no GPU.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    tensor_parallel_size: Option<u32>,
    #[command(flatten)]
    engine: Engine,
}

fn parse_utilization(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(share) if share > 0.0 && share <= 1.0 => Ok(share),
        _ => Err(format!("must be a number in (0, 1], got {value:?}")),
    }
}

/// True when the process runs as vLLM's CLI: installed as `vllm`, or told `serve` first.
fn vllm_cli() -> bool {
    let mut argv = std::env::args_os();
    let invoked_as_vllm = argv
        .next()
        .map(PathBuf::from)
        .is_some_and(|path| path.file_name().is_some_and(|name| name == "vllm"));
    invoked_as_vllm || argv.next().is_some_and(|first| first == "serve")
}

impl From<Serve> for Args {
    fn from(serve: Serve) -> Self {
        Args {
            host: serve.host,
            port: serve.port,
            model: serve.served_model_name.unwrap_or(serve.model),
            engine: serve.engine,
            // The simulator's defaults, from its own parser: no fault, the built-in scenario.
            simulation: Simulation::parse_from(["vllm"]),
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = if vllm_cli() {
        let Vllm::Serve(serve) = Vllm::parse();
        Args::from(serve)
    } else {
        Args::parse()
    };
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vllm-sim: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let Args {
        host,
        port,
        model,
        engine,
        simulation: args,
    } = args;
    for (name, rate) in [
        ("--error-rate", args.error_rate),
        ("--drop-rate", args.drop_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("{name} must be between 0 and 1, got {rate}"));
        }
    }
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path).map_err(|e| e.to_string())?,
        None => Scenario::default(),
    };
    let config = SimConfig {
        model,
        api_key: engine.api_key,
        scenario,
        faults: Faults {
            latency_ms: args.latency_ms,
            latency_jitter_ms: args.latency_jitter_ms,
            error_rate: args.error_rate,
            drop_rate: args.drop_rate,
            retry_after_secs: args.retry_after_secs,
            ..Faults::default()
        },
        max_num_seqs: engine.max_num_seqs,
        max_model_len: engine.max_model_len,
        seed: args.seed,
    };
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;
    let handle = simulator::start(listener, config).map_err(|e| e.to_string())?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", handle.addr())
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write the bound address: {e}"))?;
    }
    tracing::info!(addr = %handle.addr(), "vllm-sim listening");
    // SIGTERM too: as a container's PID 1 the kernel ignores it unless handled, and the kubelet
    // stops containers with it.
    mineru_worker::server::terminated().await;
    handle.shutdown().await;
    Ok(())
}
