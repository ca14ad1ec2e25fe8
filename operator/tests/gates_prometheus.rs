//! Gate readings and verdicts against a real Prometheus scraping an exporter the test controls:
//! pass, fail, too few samples, NaN, no data, ambiguous and invalid queries, Prometheus down.

use std::time::Duration;

use mineru_crds::{PrometheusSpec, Verdict};
use mineru_e2e::{
    controlplane::work_dir,
    prometheus::{Exporter, Prometheus, Target},
};
use mineru_operator::gates::{
    self, Source, Threshold,
    prometheus::PrometheusSource,
    template::{self, Context},
    verdict::{Reading, Readings, evaluate},
};

const METRICS: &str = "\
# TYPE mineru_worker_requests_total counter
mineru_worker_requests_total{outcome=\"success\"} 980
mineru_worker_requests_total{outcome=\"error\"} 20
# TYPE mineru_worker_errors_ratio gauge
mineru_worker_errors_ratio 0.02
# TYPE mineru_worker_idle_total counter
mineru_worker_idle_total 0
";

/// The instant the queries are evaluated at: the next whole second, so that a sample scraped a
/// moment ago is in view (a whole-second instant can precede it).
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 1
}

async fn setup(test: &str) -> (Exporter, Prometheus, PrometheusSource) {
    let exporter = Exporter::start().await.unwrap();
    exporter.set(METRICS);
    let target = Target::new("worker", exporter.address()).label("revision", "w-canary");
    let prometheus = Prometheus::start(&work_dir(test), &[target], Duration::from_millis(500))
        .await
        .unwrap();
    prometheus
        .wait_for_series("mineru_worker_errors_ratio", Duration::from_secs(30))
        .await
        .unwrap();
    let source = source_of(&prometheus);
    (exporter, prometheus, source)
}

/// A source reading `prometheus`, with a short query timeout.
fn source_of(prometheus: &Prometheus) -> PrometheusSource {
    let spec: PrometheusSpec =
        serde_json::from_value(serde_json::json!({"address": prometheus.url(), "timeout": "2s"}))
            .unwrap();
    PrometheusSource::new(&spec, None).unwrap()
}

fn max(limit: f64) -> Threshold {
    Threshold {
        max: Some(limit),
        ..Threshold::default()
    }
}

async fn judge(
    source: &PrometheusSource,
    threshold: &Threshold,
    query: &str,
    samples: Option<(&str, f64)>,
) -> Verdict {
    let readings = Readings {
        value: source.read(query, now()).await,
        stable: None,
        samples: match samples {
            Some((samples_query, _)) => Some(source.read(samples_query, now()).await),
            None => None,
        },
    };
    evaluate(threshold, samples.map(|(_, min)| min), &readings).verdict
}

#[tokio::test]
async fn readings_from_a_real_prometheus() {
    let (_exporter, mut prometheus, source) = setup("gates-readings").await;

    assert_eq!(
        source
            .read("mineru_worker_errors_ratio{revision=\"w-canary\"}", now())
            .await,
        Reading::Value(0.02)
    );
    assert_eq!(
        source
            .read("scalar(mineru_worker_errors_ratio)", now())
            .await,
        Reading::Value(0.02)
    );
    assert_eq!(
        source
            .read("mineru_worker_errors_ratio{revision=\"w-absent\"}", now())
            .await,
        Reading::Empty
    );
    let nan = source
        .read(
            "sum(mineru_worker_idle_total) / sum(mineru_worker_idle_total)",
            now(),
        )
        .await;
    assert!(matches!(nan, Reading::Value(v) if v.is_nan()), "{nan:?}");
    let ambiguous = source.read("mineru_worker_requests_total", now()).await;
    assert!(
        matches!(&ambiguous, Reading::Error(m) if m.contains("2 series")),
        "{ambiguous:?}"
    );
    let invalid = source
        .read("sum(rate(mineru_worker_requests_total[1m]", now())
        .await;
    assert!(
        matches!(&invalid, Reading::Error(m) if m.contains("parse error")),
        "{invalid:?}"
    );

    prometheus.stop();
    let down = source.read("mineru_worker_errors_ratio", now()).await;
    assert!(matches!(down, Reading::Error(_)), "{down:?}");
}

#[tokio::test]
async fn verdicts_from_a_real_prometheus() {
    let (exporter, mut prometheus, source) = setup("gates-verdicts").await;
    let ratio = "mineru_worker_errors_ratio{revision=\"w-canary\"}";
    let samples = "sum(mineru_worker_requests_total{revision=\"w-canary\"})";

    assert_eq!(
        judge(&source, &max(0.05), ratio, Some((samples, 500.0))).await,
        Verdict::Pass
    );
    assert_eq!(
        judge(&source, &max(0.01), ratio, Some((samples, 500.0))).await,
        Verdict::Fail
    );
    // Too few samples never passes nor fails, however good or bad the value.
    assert_eq!(
        judge(&source, &max(0.05), ratio, Some((samples, 5000.0))).await,
        Verdict::Inconclusive
    );
    assert_eq!(
        judge(&source, &max(0.01), ratio, Some((samples, 5000.0))).await,
        Verdict::Inconclusive
    );
    // NaN (0/0) and missing series are "no data", not a pass.
    let nan = "sum(mineru_worker_idle_total) / sum(mineru_worker_idle_total)";
    assert_eq!(
        judge(&source, &max(0.05), nan, None).await,
        Verdict::Inconclusive
    );
    assert_eq!(
        judge(&source, &max(0.05), "absent_metric_total", None).await,
        Verdict::Inconclusive
    );

    // The exporter's values move and the verdict follows at the next scrape.
    exporter.set(&METRICS.replace(
        "mineru_worker_errors_ratio 0.02",
        "mineru_worker_errors_ratio 0.5",
    ));
    prometheus
        .wait_for_series("mineru_worker_errors_ratio > 0.4", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(judge(&source, &max(0.05), ratio, None).await, Verdict::Fail);

    // A dead Prometheus is an error: it counts toward consecutiveErrorLimit, never toward promotion.
    prometheus.stop();
    assert_eq!(
        judge(&source, &max(0.05), ratio, Some((samples, 500.0))).await,
        Verdict::Error
    );
    prometheus.restart().await.unwrap();
    prometheus
        .wait_for_series(ratio, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(judge(&source, &max(0.9), ratio, None).await, Verdict::Pass);
}

#[tokio::test]
async fn a_round_renders_templates_and_reads_canary_and_stable() {
    use mineru_crds::{CheckKind, Tier};
    use mineru_operator::{
        gates::{Samples, reading::Measured, round},
        rollout::{ReadingRequest, Role},
    };

    let canary = Exporter::start().await.unwrap();
    canary.set("mineru_worker_errors_ratio 0.03\nmineru_worker_requests_total 400\n");
    let stable = Exporter::start().await.unwrap();
    stable.set("mineru_worker_errors_ratio 0.02\nmineru_worker_requests_total 4000\n");
    let targets = [
        Target::new("worker", canary.address())
            .label("revision", "w-canary")
            .label("namespace", "parsing"),
        Target::new("worker", stable.address())
            .label("revision", "w-stable")
            .label("namespace", "parsing"),
    ];
    let prometheus = Prometheus::start(
        &work_dir("gates-round"),
        &targets,
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    prometheus
        .wait_for_series(
            "count(mineru_worker_errors_ratio) == 2",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let source = source_of(&prometheus);

    let value_source = Source::Value {
        query:
            "max(mineru_worker_errors_ratio{namespace=\"{{namespace}}\",revision=\"{{revision}}\"})"
                .into(),
        samples: Some(Samples {
            query: "sum(mineru_worker_requests_total{revision=\"{{revision}}\"})".into(),
            min: 100.0,
        }),
    };
    let request = |role, revision: &str| ReadingRequest {
        check: "error-ratio".into(),
        kind: CheckKind::Promotion,
        tier: Tier::Worker,
        source: value_source.clone(),
        role,
        revision: revision.into(),
        canary_revision: "w-canary".into(),
        stable_revision: "w-stable".into(),
        window: Duration::from_secs(60),
        at: k8s_openapi::jiff::Timestamp::from_second(now()).unwrap(),
    };
    let subject = round::Subject {
        namespace: "parsing",
        name: "docs",
        interval: Duration::from_secs(60),
    };
    let results = round::read(
        &[
            request(Role::Judged, "w-canary"),
            request(Role::Baseline, "w-stable"),
        ],
        subject,
        &source,
    )
    .await;
    assert_eq!(
        results[0].query.as_deref(),
        Some("max(mineru_worker_errors_ratio{namespace=\"parsing\",revision=\"w-canary\"})")
    );
    let value_of = |measured: &Measured| match measured {
        Measured::Value { value, samples } => (value.clone(), samples.clone()),
        other => panic!("{other:?}"),
    };
    let (canary_value, canary_samples) = value_of(&results[0].measured);
    let (stable_value, _) = value_of(&results[1].measured);
    assert_eq!(canary_value, Reading::Value(0.03));
    assert_eq!(stable_value, Reading::Value(0.02));
    assert_eq!(canary_samples, Some(Reading::Value(400.0)));

    // Judged as the engine judges a value: against stable, with its samples.
    let verdict = |ratio: f64, min_samples: f64| {
        let threshold = Threshold {
            max_ratio_to_stable: Some(ratio),
            ratio_floor: Some(0.001),
            ..Threshold::default()
        };
        let readings = Readings {
            value: canary_value.clone(),
            stable: Some(stable_value.clone()),
            samples: canary_samples.clone(),
        };
        evaluate(&threshold, Some(min_samples), &readings).verdict
    };
    assert_eq!(verdict(2.0, 100.0), Verdict::Pass, "lenient");
    assert_eq!(verdict(1.05, 100.0), Verdict::Fail, "strict");
    assert_eq!(verdict(2.0, 1000.0), Verdict::Inconclusive, "starved");
}

/// Counts and histogram buckets over an evidence window read from a real Prometheus: what the
/// statistical checks are judged on.
#[tokio::test]
async fn counts_and_buckets_over_the_evidence_window() {
    use mineru_operator::evidence::Histogram;

    let exporter = Exporter::start().await.unwrap();
    let metrics = |scale: u32| {
        format!(
            "# TYPE mineru_worker_request_duration_seconds histogram\n\
             mineru_worker_request_duration_seconds_bucket{{le=\"1\"}} {}\n\
             mineru_worker_request_duration_seconds_bucket{{le=\"10\"}} {}\n\
             mineru_worker_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             mineru_worker_request_duration_seconds_sum 0\n\
             mineru_worker_request_duration_seconds_count {}\n",
            5 * scale,
            9 * scale,
            10 * scale,
            10 * scale
        )
    };
    exporter.set(&metrics(0));
    let target = Target::new("worker", exporter.address()).label("revision", "w-canary");
    let mut prometheus = Prometheus::start(
        &work_dir("gates-buckets"),
        &[target],
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    prometheus
        .wait_for_series(
            "mineru_worker_request_duration_seconds_count",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    exporter.set(&metrics(10));
    prometheus
        .wait_for_series(
            "mineru_worker_request_duration_seconds_count > 50",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let source = source_of(&prometheus);
    let buckets = "sum by (le) (increase(mineru_worker_request_duration_seconds_bucket{revision=\"w-canary\"}[1m]))";
    let reading = source.read_buckets(buckets, now()).await;
    let Reading::Buckets(histogram) = reading else {
        panic!("{reading:?}");
    };
    // increase() extrapolates: the shape, not the exact counts, is what must survive.
    let count = histogram.count();
    assert!(count > 50.0, "{histogram:?}");
    let median = histogram.quantile(0.5).unwrap();
    assert!((0.9..=1.1).contains(&median), "{median}");
    assert_eq!(
        source
            .read_buckets(
                "sum by (le) (increase(absent_bucket{revision=\"w-canary\"}[1m]))",
                now()
            )
            .await,
        Reading::Empty
    );
    let not_buckets = source
        .read_buckets("sum(mineru_worker_request_duration_seconds_count)", now())
        .await;
    assert!(
        matches!(&not_buckets, Reading::Error(m) if m.contains("le")),
        "{not_buckets:?}"
    );
    assert!(Histogram::new(vec![]).is_err());
    // The same buckets as a distribution: what falls in each bucket, 5 : 4 : 1.
    let Reading::Counts(per_bucket) = source.read_counts(buckets, now()).await else {
        panic!("counts by bucket");
    };
    assert_eq!(
        per_bucket.keys().collect::<Vec<_>>(),
        ["le=1", "le=10", "le=inf"]
    );
    assert!(per_bucket["le=1"] > per_bucket["le=10"] && per_bucket["le=10"] > per_bucket["le=inf"]);
    // Any other label names its category.
    let by_label = r#"sum by (kind) (label_replace(mineru_worker_request_duration_seconds_bucket, "kind", "k$1", "le", "(.*)"))"#;
    let Reading::Counts(by_kind) = source.read_counts(by_label, now()).await else {
        panic!("counts by label");
    };
    assert_eq!(
        by_kind.keys().collect::<Vec<_>>(),
        ["kind=k+Inf", "kind=k1", "kind=k10"]
    );
    prometheus.stop();
    assert!(matches!(
        source.read_buckets(buckets, now()).await,
        Reading::Error(_)
    ));
}

/// Every built-in query (values, counts, buckets and sample counts) is PromQL a real Prometheus
/// accepts; with no such series scraped they read as no data, never as an error.
#[tokio::test]
async fn every_built_in_query_is_accepted_by_prometheus() {
    let (_exporter, _prometheus, source) = setup("gates-builtins").await;
    let analysis = serde_json::from_value(serde_json::json!({
        "prometheus": {"address": "http://unused:9090"},
        "quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}
    }))
    .unwrap();
    let steps: Vec<mineru_crds::Step> = serde_json::from_value(serde_json::json!([
        {"weight": 10}, {"weight": 50}, {"weight": 100}
    ]))
    .unwrap();
    let checks = gates::checks(&analysis, &steps, false);
    let mut read = 0;
    for check in &checks {
        for template in check.source.templates() {
            let context = Context {
                namespace: "parsing",
                name: "docs",
                revision: "w-19ab",
                canary_revision: "w-19ab",
                stable_revision: "w-88c2",
                tier: check.tier,
                interval: Duration::from_secs(60),
                window: Duration::from_secs(3600),
            };
            let query = template::render(template, &context).unwrap();
            let reading = source.read_as(&check.source, &query, now()).await;
            assert!(
                !matches!(reading, Reading::Error(_)),
                "{}: {query}: {reading:?}",
                check.name
            );
            read += 1;
        }
    }
    assert!(read >= 15, "{read} queries read");
}
