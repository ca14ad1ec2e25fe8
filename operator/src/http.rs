//! The operator's own HTTP endpoints: `/metrics`, `/healthz` and `/readyz`.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get,
};

use crate::{liveness::Liveness, metrics::Metrics};

/// Whether this replica can do its job: it reached the API server and found the CRD. A standby
/// replica is ready too; only the Lease decides who reconciles.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the replica ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    liveness: Arc<Liveness>,
}

/// The routes.
pub fn router(metrics: Arc<Metrics>, readiness: Readiness, liveness: Arc<Liveness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthy))
        .route("/readyz", get(ready))
        .with_state(AppState {
            metrics,
            readiness,
            liveness,
        })
}

/// Serves `router` on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Alive while reconciles finish: one stuck past its deadline means this replica (perhaps the
/// leader) no longer makes progress, and a restart hands the work to a replica that does.
async fn healthy(State(state): State<AppState>) -> impl IntoResponse {
    match state.liveness.stalled() {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(running) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "a reconcile has been running for {}s, past the {}s deadline",
                running.as_secs(),
                state.liveness.deadline().as_secs()
            ),
        ),
    }
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the API server or the CRD was not reached yet",
        )
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Serves the router on a free loopback port and returns the raw answer to `GET path`.
    async fn get_raw(router: Router, path: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        server.abort();
        answer
    }

    fn routes(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
        router(metrics, readiness, Arc::default())
    }

    #[tokio::test]
    async fn healthz_fails_while_a_reconcile_runs_past_its_deadline() {
        let liveness = Arc::new(Liveness::new(std::time::Duration::ZERO));
        let healthz = || router(Arc::default(), Readiness::default(), liveness.clone());
        let answer = get_raw(healthz(), "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let stuck = liveness.reconciling();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let answer = get_raw(healthz(), "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("past the 0s deadline"), "{answer}");
        drop(stuck);
        let answer = get_raw(healthz(), "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn readyz_is_unavailable_until_marked_ready() {
        let readiness = Readiness::default();
        let answer = get_raw(routes(Arc::default(), readiness.clone()), "/readyz").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        readiness.set(true);
        let answer = get_raw(routes(Arc::default(), readiness), "/readyz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_openmetrics_format() {
        let metrics = Arc::new(Metrics::default());
        metrics.reconciled(std::time::Duration::from_millis(3));
        let answer = get_raw(routes(metrics, Readiness::default()), "/metrics").await;
        assert!(answer.contains("application/openmetrics-text"), "{answer}");
        assert!(
            answer.contains("mineru_operator_reconciles_total 1"),
            "{answer}"
        );
    }
}
