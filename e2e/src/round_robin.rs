//! A stand-in for a Kubernetes Service in front of several worker processes: every TCP
//! connection goes to the next backend in turn, one that refuses is skipped (as kube-proxy drops
//! an endpoint that is gone), and the endpoint list may change while it runs. Balancing is per
//! connection, as kube-proxy's is: a client that keeps its connection alive stays on one backend.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};

pub struct RoundRobin {
    address: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    connections: Arc<Mutex<BTreeMap<SocketAddr, u64>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RoundRobin {
    /// Listens on a free loopback port, in front of `backends`.
    pub fn start(backends: Vec<SocketAddr>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = StdListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let backends = Arc::new(Mutex::new(backends));
        let connections = Arc::new(Mutex::new(BTreeMap::new()));
        let (shared, counts) = (backends.clone(), connections.clone());
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            let mut next = 0usize;
            while let Ok((mut client, _)) = listener.accept().await {
                let candidates = shared.lock().map(|b| b.clone()).unwrap_or_default();
                let start = next;
                next = next.wrapping_add(1);
                let counts = counts.clone();
                tokio::spawn(async move {
                    for i in 0..candidates.len() {
                        let backend = candidates[(start + i) % candidates.len()];
                        if let Ok(mut upstream) = TcpStream::connect(backend).await {
                            if let Ok(mut counts) = counts.lock() {
                                *counts.entry(backend).or_insert(0) += 1;
                            }
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            return;
                        }
                    }
                    // No backend is up: the client's connection is closed, as a Service with
                    // no ready endpoints refuses it.
                });
            }
        });
        Ok(Self {
            address,
            backends,
            connections,
            runtime: Some(runtime),
        })
    }

    /// The loopback address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The current endpoints.
    pub fn backends(&self) -> Vec<SocketAddr> {
        self.backends.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Replaces the endpoints, as a rollout changes a Service's. Connections already open stay
    /// where they are.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        if let Ok(mut current) = self.backends.lock() {
            *current = backends;
        }
    }

    /// Connections forwarded so far, by backend (only backends that took one appear).
    pub fn connections(&self) -> BTreeMap<SocketAddr, u64> {
        self.connections
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Connections forwarded so far to `backend`.
    pub fn connections_to(&self, backend: SocketAddr) -> u64 {
        self.connections().get(&backend).copied().unwrap_or(0)
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
