//! The simulator's Prometheus metrics, named and labelled as vLLM's (`vllm:` prefix,
//! `model_name` label), plus a counter of protocol deviations.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// vLLM's end-to-end latency buckets (seconds).
const E2E_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// vLLM's time-to-first-token buckets (seconds).
const TTFT_BUCKETS: [f64; 18] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0,
];

pub struct Metrics {
    registry: Registry,
    pub running: Gauge,
    pub waiting: Gauge,
    pub kv_cache_usage: Gauge<f64, AtomicU64>,
    success: Family<Labels, Counter>,
    pub prompt_tokens: Counter,
    pub generation_tokens: Counter,
    pub e2e_latency: Histogram,
    pub ttft: Histogram,
    deviations: Family<Labels, Counter>,
}

impl Metrics {
    /// Metrics for `model_name`; deviation counters start at zero for every kind in
    /// `deviation_kinds`, so rates work from the first scrape.
    pub fn new(model_name: &str, deviation_kinds: &[&str]) -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            running: Gauge::default(),
            waiting: Gauge::default(),
            kv_cache_usage: Gauge::default(),
            success: Family::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            e2e_latency: Histogram::new(E2E_BUCKETS),
            ttft: Histogram::new(TTFT_BUCKETS),
            deviations: Family::default(),
        };
        let model = metrics
            .registry
            .sub_registry_with_label(("model_name".into(), model_name.to_owned().into()));
        model.register(
            "vllm:num_requests_running",
            "Number of requests in model execution batches",
            metrics.running.clone(),
        );
        model.register(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed",
            metrics.waiting.clone(),
        );
        model.register(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage",
            metrics.kv_cache_usage.clone(),
        );
        model.register(
            "vllm:request_success",
            "Count of successfully processed requests",
            metrics.success.clone(),
        );
        model.register(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed",
            metrics.prompt_tokens.clone(),
        );
        model.register(
            "vllm:generation_tokens",
            "Number of generation tokens processed",
            metrics.generation_tokens.clone(),
        );
        model.register(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds",
            metrics.e2e_latency.clone(),
        );
        model.register(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds",
            metrics.ttft.clone(),
        );
        model.register(
            "vllm_sim_protocol_deviations",
            "Requests rejected because they deviate from the MinerU protocol",
            metrics.deviations.clone(),
        );
        for kind in deviation_kinds {
            drop(metrics.deviations.get_or_create(&deviation_labels(kind)));
        }
        metrics
    }

    pub fn count_success(&self, finished_reason: &str) {
        self.success
            .get_or_create(&vec![(
                "finished_reason".to_owned(),
                finished_reason.to_owned(),
            )])
            .inc();
    }

    pub fn count_deviation(&self, kind: &str) {
        self.deviations.get_or_create(&deviation_labels(kind)).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn deviation_labels(kind: &str) -> Labels {
    vec![("kind".to_owned(), kind.to_owned())]
}
