//! A TCP fault proxy between the worker and the simulator, as Toxiproxy places itself: it adds
//! latency, drops connections or partitions the network (accepts and never answers), switched
//! at run time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to connections from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards both ways untouched.
    None,
    /// Holds every chunk from upstream this long before passing it on.
    Latency(Duration),
    /// Closes new connections at once and cuts those open.
    Drop,
    /// Accepts and forwards nothing either way, as a partitioned network would.
    Partition,
}

/// A running proxy to `upstream`.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let fault = Arc::new(Mutex::new(Fault::None));
        let current = fault.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let current = current.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, current).await;
                    }
                });
            }
        });
        FaultProxy { addr, fault, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways, consulting the fault before every chunk.
async fn relay(client: TcpStream, server: TcpStream, fault: Arc<Mutex<Fault>>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pipe(client_read, server_write, fault.clone(), false);
    let down = pipe(server_read, client_write, fault, true);
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: Arc<Mutex<Fault>>,
    delayed: bool,
) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let now = *fault.lock().unwrap();
            match now {
                Fault::None => break,
                Fault::Latency(wait) if delayed => {
                    tokio::time::sleep(wait).await;
                    break;
                }
                Fault::Latency(_) => break,
                Fault::Drop => return,
                // Held until the partition heals (or the other side gives up).
                Fault::Partition => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
