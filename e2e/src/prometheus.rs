//! A real Prometheus server on loopback with a generated scrape configuration, and a tiny
//! exporter whose metrics text a test sets at will.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::jiff::Timestamp;

use crate::process::{Supervised, free_port, tail};

/// One scrape target: a job name, an address, and labels attached to every series it exports.
#[derive(Clone, Debug)]
pub struct Target {
    pub job: String,
    pub address: SocketAddr,
    pub labels: Vec<(String, String)>,
}

impl Target {
    /// A target without extra labels.
    pub fn new(job: &str, address: SocketAddr) -> Self {
        Target {
            job: job.to_owned(),
            address,
            labels: Vec::new(),
        }
    }

    /// Adds a label attached to every scraped series, as a PodMonitor's relabeling would.
    pub fn label(mut self, name: &str, value: &str) -> Self {
        self.labels.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A running Prometheus. Dropping it stops the server; its log stays in the given directory.
pub struct Prometheus {
    url: String,
    process: Option<Supervised>,
    log: PathBuf,
    query_log: PathBuf,
    start: Box<dyn Fn() -> Result<Supervised> + Send>,
}

/// One query Prometheus answered, from its query log.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedQuery {
    /// When it was answered (milliseconds).
    pub at: Timestamp,
    /// The PromQL.
    pub query: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every `scrape_interval`, with state under `dir`. It
    /// logs every query it answers (`queries`).
    pub async fn start(dir: &Path, targets: &[Target], scrape_interval: Duration) -> Result<Self> {
        let config = scrape_config(targets, scrape_interval, &query_log(dir));
        Self::start_configured(dir, &config).await
    }

    /// Starts Prometheus with `config` (its YAML configuration), with state under `dir`.
    pub async fn start_configured(dir: &Path, config: &str) -> Result<Self> {
        let binary = crate::which("prometheus").context(
            "prometheus is not installed: run `make deps` (Debian package `prometheus`)",
        )?;
        std::fs::create_dir_all(dir)?;
        let config_text = config;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text)?;
        let port = free_port()?;
        let data = dir.join("prometheus-data");
        // A fresh TSDB: samples of an earlier run would answer before the first scrape.
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        let logs = dir.to_owned();
        let start = move || {
            let mut command = Command::new(&binary);
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .args(["--log.level=warn", "--web.enable-lifecycle"]);
            Supervised::spawn("prometheus", command, &logs)
        };
        let mut prometheus = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            process: None,
            log: dir.join("prometheus.log"),
            query_log: query_log(dir),
            start: Box::new(start),
        };
        prometheus.restart().await?;
        Ok(prometheus)
    }

    /// Base URL of the HTTP API.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every query answered so far, in order, when the configuration logs them (`start` does).
    pub fn queries(&self) -> Vec<LoggedQuery> {
        std::fs::read_to_string(&self.query_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).ok()?;
                Some(LoggedQuery {
                    at: entry["ts"].as_str()?.parse().ok()?,
                    query: entry["params"]["query"].as_str()?.to_owned(),
                })
            })
            .collect()
    }

    /// Stops the server (as an outage would); `restart` brings it back on the same port and data.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Duration::from_secs(5));
        }
    }

    /// Starts the server again after `stop` and waits until it is ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.process = Some((self.start)()?);
        self.wait_ready(Duration::from_secs(30)).await
    }

    async fn wait_ready(&mut self, budget: Duration) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + budget;
        loop {
            if let Some(process) = &mut self.process {
                process.ensure_running()?;
            }
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus not ready after {budget:?}:\n{}",
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until an instant query returns at least one series; fails after `budget`.
    pub async fn wait_for_series(&self, query: &str, budget: Duration) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + budget;
        loop {
            let body: serde_json::Value = client
                .get(format!("{}/api/v1/query", self.url))
                .query(&[("query", query)])
                .send()
                .await?
                .json()
                .await?;
            let found = body["data"]["result"]
                .as_array()
                .is_some_and(|result| !result.is_empty());
            if found {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("no series for {query:?} after {budget:?}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn query_log(dir: &Path) -> PathBuf {
    dir.join("queries.log")
}

fn scrape_config(targets: &[Target], interval: Duration, query_log: &Path) -> String {
    // Prometheus durations take whole units only.
    let millis = interval.as_millis();
    let mut config = format!(
        "global:\n  scrape_interval: {millis}ms\n  evaluation_interval: {millis}ms\n  \
         query_log_file: {:?}\nscrape_configs:\n",
        query_log.display().to_string()
    );
    let mut jobs: Vec<&str> = targets.iter().map(|t| t.job.as_str()).collect();
    jobs.sort_unstable();
    jobs.dedup();
    for job in jobs {
        let _ = write!(config, "- job_name: {job:?}\n  static_configs:\n");
        for target in targets.iter().filter(|t| t.job == job) {
            let _ = write!(
                config,
                "  - targets: [\"{}\"]\n    labels: {{",
                target.address
            );
            let labels: Vec<String> = target
                .labels
                .iter()
                .map(|(name, value)| format!("{name}: {value:?}"))
                .collect();
            let _ = writeln!(config, "{}}}", labels.join(", "));
        }
    }
    config
}

/// An HTTP server answering `GET /metrics` with whatever text the test last set.
pub struct Exporter {
    address: SocketAddr,
    body: Arc<Mutex<String>>,
    server: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Starts serving an empty exposition on a free loopback port.
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let body = Arc::new(Mutex::new(String::new()));
        let shared = body.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = shared.lock().expect("exporter body lock").clone();
                async move { text }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Exporter {
            address,
            body,
            server,
        })
    }

    /// Where Prometheus scrapes it.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Replaces the exposition text served from now on.
    pub fn set(&self, text: &str) {
        *self.body.lock().expect("exporter body lock") = text.to_owned();
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.abort();
    }
}
