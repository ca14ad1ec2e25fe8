//! The worker's Prometheus metrics. Every series carries `revision`, so the operator's gates can
//! compare a canary with the stable revision; names and labels are documented in
//! docs/worker-metrics.md and queried verbatim by the operator's built-in gates.

use std::borrow::Cow;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::output::Backend;
use crate::render_pool::{PoolObserver, StopReason};
use crate::signals::DocumentSignals;
use mineru_protocol::client::CallError;
use mineru_protocol::model::BlockType;
use mineru_protocol::worker::{DOCUMENT_SECONDS_BUCKETS, PAGE_SECONDS_BUCKETS};

/// How a `/file_parse` request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The request itself was wrong (bad form, not a PDF, too large).
    ClientError,
    /// Turned away before any work: at capacity, breaker open, shutting down.
    Rejected,
    /// The worker or the vLLM tier failed.
    Error,
    /// The request deadline passed.
    Timeout,
    /// A probe document turned away to keep the slots for clients: says nothing of the revision.
    Deferred,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::ClientError,
        Outcome::Rejected,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Deferred,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ClientError => "client_error",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Deferred => "deferred",
        }
    }
}

/// The `backend` label: the request's backend, or `unknown` when it was refused before its form
/// was read.
pub fn backend_label(backend: Option<Backend>) -> &'static str {
    match backend {
        Some(Backend::Vlm) => "vlm",
        Some(Backend::Text) => "text",
        None => "unknown",
    }
}

/// Who sent a document: a client (`traffic`), the operator's probe traffic (`probe`), or the
/// operator's golden-document comparisons (`golden`), from the request header
/// [`SOURCE_HEADER`], so dashboards and gates can count them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Traffic,
    Probe,
    Golden,
}

/// The request header that marks probe documents.
pub const SOURCE_HEADER: &str = "x-mineru-source";

impl Source {
    pub const ALL: [Source; 3] = [Source::Traffic, Source::Probe, Source::Golden];

    pub fn of(headers: &axum::http::HeaderMap) -> Source {
        match headers.get(SOURCE_HEADER).map(|v| v.as_bytes()) {
            Some(b"probe") => Source::Probe,
            Some(b"golden") => Source::Golden,
            _ => Source::Traffic,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Traffic => "traffic",
            Source::Probe => "probe",
            Source::Golden => "golden",
        }
    }
}

/// The signals of [`crate::signals`] a document can be flagged with.
const SIGNALS: [&str; 3] = ["truncated", "repetition", "empty_page"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    backend: &'static str,
    source: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: &'static str,
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlockLabels {
    backend: &'static str,
    source: &'static str,
    block_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    backend: &'static str,
    source: &'static str,
    signal: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StopLabels {
    reason: &'static str,
}

/// Breaker state as exported: 0 closed, 1 half-open, 2 open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerGauge {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<BackendLabels, Histogram>,
    pages: Family<BackendLabels, Counter>,
    page_duration: Family<BackendLabels, Histogram>,
    documents: Family<BackendLabels, Counter>,
    flagged_documents: Family<SignalLabels, Counter>,
    truncated_answers: Family<BackendLabels, Counter>,
    repetitive_blocks: Family<BackendLabels, Counter>,
    empty_pages: Family<BackendLabels, Counter>,
    blocks: Family<BlockLabels, Counter>,
    page_blocks: Family<BackendLabels, Histogram>,
    vllm_requests: Family<StatusLabels, Counter>,
    vllm_duration: Histogram,
    vllm_retries: Counter,
    breaker_state: Gauge,
    breaker_opens: Counter,
    inflight: Gauge,
    render_stops: Family<StopLabels, Counter>,
}

impl PoolObserver for Metrics {
    fn stopped(&self, reason: StopReason) {
        self.render_stops
            .get_or_create(&StopLabels {
                reason: reason.as_str(),
            })
            .inc();
    }
}

/// Bounds of `page_blocks`: an empty page, a sparse one, a dense one.
pub const PAGE_BLOCKS_BUCKETS: [f64; 8] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

fn document_histogram() -> Histogram {
    Histogram::new(DOCUMENT_SECONDS_BUCKETS)
}

fn page_histogram() -> Histogram {
    Histogram::new(PAGE_SECONDS_BUCKETS)
}

impl Metrics {
    pub fn new(revision: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "mineru_worker",
            [(Cow::Borrowed("revision"), Cow::Owned(revision.to_owned()))].into_iter(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration =
            Family::<BackendLabels, Histogram>::new_with_constructor(document_histogram);
        let pages = Family::<BackendLabels, Counter>::default();
        let page_duration =
            Family::<BackendLabels, Histogram>::new_with_constructor(page_histogram);
        let documents = Family::<BackendLabels, Counter>::default();
        let flagged_documents = Family::<SignalLabels, Counter>::default();
        let truncated_answers = Family::<BackendLabels, Counter>::default();
        let repetitive_blocks = Family::<BackendLabels, Counter>::default();
        let empty_pages = Family::<BackendLabels, Counter>::default();
        let blocks = Family::<BlockLabels, Counter>::default();
        let page_blocks = Family::<BackendLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(PAGE_BLOCKS_BUCKETS)
        });
        let vllm_requests = Family::<StatusLabels, Counter>::default();
        let vllm_duration = Histogram::new([
            0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]);
        let vllm_retries = Counter::default();
        let breaker_state = Gauge::default();
        let breaker_opens = Counter::default();
        let inflight = Gauge::default();
        let render_stops = Family::<StopLabels, Counter>::default();
        registry.register(
            "render_subprocess_stops",
            "Render subprocesses that stopped mid-call, by how they ended",
            render_stops.clone(),
        );
        registry.register(
            "requests",
            "/file_parse requests by backend and outcome",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "/file_parse request duration",
            request_duration.clone(),
        );
        registry.register("pages", "Pages extracted", pages.clone());
        registry.register(
            "page_duration_seconds",
            "Each document's processing time divided by its pages",
            page_duration.clone(),
        );
        registry.register(
            "documents",
            "Documents extracted (the denominator of the quality signals)",
            documents.clone(),
        );
        registry.register(
            "flagged_documents",
            "Extracted documents with at least one truncated answer, repetitive block or empty page",
            flagged_documents.clone(),
        );
        registry.register(
            "truncated_answers",
            "Model answers cut at the server's length limit (finish_reason length)",
            truncated_answers.clone(),
        );
        registry.register(
            "repetitive_blocks",
            "Blocks whose content repeats an n-gram past the degenerate-repetition bound",
            repetitive_blocks.clone(),
        );
        registry.register(
            "empty_pages",
            "Pages with ink on which the model found no block",
            empty_pages.clone(),
        );
        registry.register(
            "blocks",
            "Blocks extracted by block type (page furniture aside)",
            blocks.clone(),
        );
        registry.register(
            "page_blocks",
            "Blocks extracted per page (page furniture aside)",
            page_blocks.clone(),
        );
        registry.register(
            "vllm_requests",
            "HTTP calls to the vLLM tier by status (HTTP code, timeout, transport, invalid_answer)",
            vllm_requests.clone(),
        );
        registry.register(
            "vllm_request_duration_seconds",
            "Duration of one HTTP call to the vLLM tier",
            vllm_duration.clone(),
        );
        registry.register(
            "vllm_retries",
            "Failed vLLM calls that were retried",
            vllm_retries.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker toward the vLLM tier: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        registry.register(
            "breaker_opens",
            "Times the circuit breaker opened",
            breaker_opens.clone(),
        );
        registry.register(
            "inflight_documents",
            "Documents being processed",
            inflight.clone(),
        );
        // Zero-valued series from the start, so rates and ratios exist before the first failure;
        // a request refused before its form was read has no backend yet.
        for source in Source::ALL.map(Source::as_str) {
            for outcome in [Outcome::Rejected, Outcome::Deferred, Outcome::ClientError] {
                requests
                    .get_or_create(&RequestLabels {
                        backend: backend_label(None),
                        source,
                        outcome: outcome.as_str(),
                    })
                    .inc_by(0);
            }
        }
        for backend in [Backend::Text, Backend::Vlm] {
            let backend = backend_label(Some(backend));
            for source in Source::ALL.map(Source::as_str) {
                for outcome in Outcome::ALL {
                    requests
                        .get_or_create(&RequestLabels {
                            backend,
                            source,
                            outcome: outcome.as_str(),
                        })
                        .inc_by(0);
                }
                let labels = BackendLabels { backend, source };
                for counter in [
                    &pages,
                    &documents,
                    &truncated_answers,
                    &repetitive_blocks,
                    &empty_pages,
                ] {
                    counter.get_or_create(&labels).inc_by(0);
                }
                // increase() misses the first count of a series born inside its window.
                for kind in BlockType::ALL.into_iter().filter(|t| !t.is_discarded()) {
                    blocks
                        .get_or_create(&BlockLabels {
                            backend,
                            source,
                            block_type: kind.as_str(),
                        })
                        .inc_by(0);
                }
                drop(page_blocks.get_or_create(&labels));
                for signal in SIGNALS {
                    flagged_documents
                        .get_or_create(&SignalLabels {
                            backend,
                            source,
                            signal,
                        })
                        .inc_by(0);
                }
            }
        }
        Self {
            registry,
            requests,
            request_duration,
            pages,
            page_duration,
            documents,
            flagged_documents,
            truncated_answers,
            repetitive_blocks,
            empty_pages,
            blocks,
            page_blocks,
            vllm_requests,
            vllm_duration,
            vllm_retries,
            breaker_state,
            breaker_opens,
            inflight,
            render_stops,
        }
    }

    pub fn request(
        &self,
        backend: Option<Backend>,
        source: Source,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        let backend = backend_label(backend);
        let source = source.as_str();
        self.requests
            .get_or_create(&RequestLabels {
                backend,
                source,
                outcome: outcome.as_str(),
            })
            .inc();
        // A deferred document was never served: its milliseconds would pull latency down.
        if outcome != Outcome::Deferred {
            self.request_duration
                .get_or_create(&BackendLabels { backend, source })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// A document extracted: its pages, the time it took per page, and what its extraction
    /// showed about the model's reading.
    pub fn document(
        &self,
        backend: Backend,
        source: Source,
        signals: &DocumentSignals,
        elapsed: Duration,
    ) {
        let (backend, source) = (backend_label(Some(backend)), source.as_str());
        let labels = BackendLabels { backend, source };
        let pages = signals.blocks_per_page.len();
        self.pages.get_or_create(&labels).inc_by(pages as u64);
        if pages > 0 {
            self.page_duration
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64() / pages as f64);
        }
        self.documents.get_or_create(&labels).inc();
        let counts = [
            (
                "truncated",
                &self.truncated_answers,
                signals.truncated_blocks,
            ),
            (
                "repetition",
                &self.repetitive_blocks,
                signals.repetitive_blocks,
            ),
            ("empty_page", &self.empty_pages, signals.empty_pages),
        ];
        for (signal, counter, count) in counts {
            counter.get_or_create(&labels).inc_by(count as u64);
            if count > 0 {
                self.flagged_documents
                    .get_or_create(&SignalLabels {
                        backend,
                        source,
                        signal,
                    })
                    .inc();
            }
        }
        for (&block_type, &count) in &signals.blocks_by_type {
            self.blocks
                .get_or_create(&BlockLabels {
                    backend,
                    source,
                    block_type,
                })
                .inc_by(count);
        }
        let page_blocks = self.page_blocks.get_or_create(&labels);
        for &blocks in &signals.blocks_per_page {
            page_blocks.observe(blocks as f64);
        }
    }

    pub fn vllm_call(&self, outcome: Result<(), &CallError>, elapsed: Duration, retrying: bool) {
        let status: Cow<'static, str> = match outcome {
            Ok(()) => Cow::Borrowed("200"),
            Err(CallError::Status { status, .. }) => Cow::Owned(status.as_u16().to_string()),
            Err(CallError::Timeout(_)) => Cow::Borrowed("timeout"),
            Err(CallError::Transport(_)) => Cow::Borrowed("transport"),
            Err(CallError::Answer(_)) => Cow::Borrowed("invalid_answer"),
            Err(CallError::TooLarge { .. }) => Cow::Borrowed("too_large"),
        };
        self.vllm_requests
            .get_or_create(&StatusLabels { status })
            .inc();
        self.vllm_duration.observe(elapsed.as_secs_f64());
        if retrying {
            self.vllm_retries.inc();
        }
    }

    pub fn breaker(&self, state: BreakerGauge) {
        self.breaker_state.set(state as i64);
    }

    pub fn breaker_opened(&self) {
        self.breaker_opens.inc();
    }

    pub fn inflight(&self) -> &Gauge {
        &self.inflight
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
