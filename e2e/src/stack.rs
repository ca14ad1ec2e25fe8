//! The data plane beside the control plane. Pods on kwok nodes run no containers, so each
//! revision's vLLM (the simulator) and workers (the real `mineru-worker serve`) run as local
//! processes; the operator reaches them through a Service override file, and Prometheus scrapes
//! them with the labels a PodMonitor would attach.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    process::{Supervised, free_port},
    prometheus::Target,
    wait_until, workspace_binary,
};

/// A vLLM simulator process serving one model revision.
pub struct Simulator {
    pub revision: String,
    pub address: SocketAddr,
    _process: Supervised,
}

impl Simulator {
    /// Starts `vllm-sim` for `model` with extra flags (fault injection), logging under `logs`.
    pub fn start(revision: &str, model: &str, extra: &[&str], logs: &Path) -> Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(workspace_binary("vllm-sim")?);
        command
            .args(["--host", "127.0.0.1", "--model", model])
            .arg(format!("--port={port}"))
            .args(extra);
        let process = Supervised::spawn(&format!("vllm-sim-{revision}"), command, logs)?;
        let address: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        wait_for_http(&format!("http://{address}/health"))?;
        Ok(Simulator {
            revision: revision.to_owned(),
            address,
            _process: process,
        })
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes fault injection at runtime (`PUT /admin/faults`).
    pub fn set_faults(&self, faults: serde_json::Value) -> Result<()> {
        let response = blocking_client()
            .put(format!("{}/admin/faults", self.url()))
            .json(&faults)
            .send()?;
        if !response.status().is_success() {
            bail!(
                "setting faults on {}: HTTP {}",
                self.url(),
                response.status()
            );
        }
        Ok(())
    }

    /// The simulator's counters (`GET /admin/stats`): requests, answers per step, deviations.
    pub fn stats(&self) -> Result<serde_json::Value> {
        let response = blocking_client()
            .get(format!("{}/admin/stats", self.url()))
            .send()?
            .error_for_status()?;
        Ok(response.json()?)
    }

    /// The scrape target for Prometheus, labelled as the vLLM pods of `namespace`.
    pub fn target(&self, namespace: &str) -> Target {
        Target::new("vllm", self.address)
            .label("namespace", namespace)
            .label("revision", &self.revision)
    }
}

/// A `mineru-worker serve` process of one worker revision.
pub struct Worker {
    pub revision: String,
    pub address: SocketAddr,
    process: Supervised,
}

impl Worker {
    /// Starts a worker of `revision` calling the vLLM at `server_url`.
    pub fn start(revision: &str, server_url: &str, model: &str, logs: &Path) -> Result<Self> {
        Self::spawn(
            revision,
            &[
                "--backend",
                "vlm",
                "--server-url",
                server_url,
                "--model-name",
                model,
            ],
            logs,
        )
    }

    /// Starts a worker of `revision` with the model-free text backend.
    pub fn start_text(revision: &str, logs: &Path) -> Result<Self> {
        Self::spawn(revision, &["--backend", "text"], logs)
    }

    /// Starts a worker of `revision` with the given flags (backend, job store, timings).
    pub fn spawn(revision: &str, flags: &[&str], logs: &Path) -> Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(workspace_binary("mineru-worker")?);
        command
            .args(["serve", "--host", "127.0.0.1"])
            .arg(format!("--port={port}"))
            .args(flags)
            .args(["--revision", revision])
            .env("RUST_LOG", "info");
        let process = Supervised::spawn(&format!("worker-{revision}-{port}"), command, logs)?;
        let address: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        wait_for_http(&format!("http://{address}/health"))?;
        Ok(Worker {
            revision: revision.to_owned(),
            address,
            process,
        })
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// SIGTERM, as a pod is stopped, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.process.stop(grace);
    }

    /// SIGKILL: the worker dies with whatever it was doing.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGSTOP: the worker stalls (takes no job, renews no lease) until [`Worker::thaw`].
    pub fn freeze(&self) {
        self.process.freeze();
    }

    pub fn thaw(&self) {
        self.process.thaw();
    }

    /// Whether the process ended within `budget`.
    pub fn exits_within(&mut self, budget: Duration) -> bool {
        self.process.exits_within(budget)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The scrape target for Prometheus, labelled as the worker pods of `namespace`.
    pub fn target(&self, namespace: &str) -> Target {
        Target::new("mineru-worker", self.address)
            .label("namespace", namespace)
            .label("revision", &self.revision)
    }
}

/// Writes the operator's Service override file: `<namespace>/<service>` → local URL.
pub fn write_service_map(path: &Path, services: &BTreeMap<String, String>) -> Result<PathBuf> {
    std::fs::write(path, serde_json::to_string_pretty(services)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_owned())
}

fn blocking_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a default HTTP client builds")
}

fn wait_for_http(url: &str) -> Result<()> {
    let client = blocking_client();
    wait_until(url, Duration::from_secs(30), || {
        Ok(client
            .get(url)
            .send()
            .ok()
            .filter(|response| response.status().is_success())
            .map(|_| ()))
    })
}
