//! A stand-in for a Kubernetes Service in front of several worker processes: every TCP
//! connection goes to the next backend in turn, one that refuses is skipped (as kube-proxy drops
//! an endpoint that is gone), and the endpoint list may change while it runs.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};

pub struct RoundRobin {
    address: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RoundRobin {
    pub fn start(backends: Vec<SocketAddr>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = StdListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let backends = Arc::new(Mutex::new(backends));
        let shared = backends.clone();
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            let mut next = 0usize;
            while let Ok((mut client, _)) = listener.accept().await {
                let candidates = shared.lock().map(|b| b.clone()).unwrap_or_default();
                let start = next;
                next = next.wrapping_add(1);
                tokio::spawn(async move {
                    for i in 0..candidates.len() {
                        let backend = candidates[(start + i) % candidates.len()];
                        if let Ok(mut upstream) = TcpStream::connect(backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self {
            address,
            backends,
            runtime: Some(runtime),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Replaces the endpoints, as a rollout changes a Service's.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        if let Ok(mut current) = self.backends.lock() {
            *current = backends;
        }
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
