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
    /// Require `Authorization: Bearer <key>` on /v1 routes.
    #[arg(long, env = "VLLM_API_KEY")]
    api_key: Option<String>,
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
    /// Requests processed at once; the rest wait (vLLM's --max-num-seqs).
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    /// Longest `max_tokens` accepted.
    #[arg(long, default_value_t = 16384)]
    max_model_len: u64,
    /// Seed for the random fault draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vllm-sim: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
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
        model: args.model,
        api_key: args.api_key,
        scenario,
        faults: Faults {
            latency_ms: args.latency_ms,
            latency_jitter_ms: args.latency_jitter_ms,
            error_rate: args.error_rate,
            drop_rate: args.drop_rate,
            retry_after_secs: args.retry_after_secs,
            ..Faults::default()
        },
        max_num_seqs: args.max_num_seqs,
        max_model_len: args.max_model_len,
        seed: args.seed,
    };
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let handle = simulator::start(listener, config).map_err(|e| e.to_string())?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", handle.addr())
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write the bound address: {e}"))?;
    }
    tracing::info!(addr = %handle.addr(), "vllm-sim listening");
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    handle.shutdown().await;
    Ok(())
}
