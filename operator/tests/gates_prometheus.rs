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
    let spec: PrometheusSpec =
        serde_json::from_value(serde_json::json!({"address": prometheus.url(), "timeout": "2s"}))
            .unwrap();
    let source = PrometheusSource::new(&spec, None).unwrap();
    (exporter, prometheus, source)
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
        value: source.read(query).await,
        stable: None,
        samples: match samples {
            Some((samples_query, _)) => Some(source.read(samples_query).await),
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
            .read("mineru_worker_errors_ratio{revision=\"w-canary\"}")
            .await,
        Reading::Value(0.02)
    );
    assert_eq!(
        source.read("scalar(mineru_worker_errors_ratio)").await,
        Reading::Value(0.02)
    );
    assert_eq!(
        source
            .read("mineru_worker_errors_ratio{revision=\"w-absent\"}")
            .await,
        Reading::Empty
    );
    let nan = source
        .read("sum(mineru_worker_idle_total) / sum(mineru_worker_idle_total)")
        .await;
    assert!(matches!(nan, Reading::Value(v) if v.is_nan()), "{nan:?}");
    let ambiguous = source.read("mineru_worker_requests_total").await;
    assert!(
        matches!(&ambiguous, Reading::Error(m) if m.contains("2 series")),
        "{ambiguous:?}"
    );
    let invalid = source
        .read("sum(rate(mineru_worker_requests_total[1m]")
        .await;
    assert!(
        matches!(&invalid, Reading::Error(m) if m.contains("parse error")),
        "{invalid:?}"
    );

    prometheus.stop();
    let down = source.read("mineru_worker_errors_ratio").await;
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
async fn a_round_renders_templates_and_compares_canary_with_stable() {
    use mineru_crds::{CheckKind, Policy, Revisions, Tier};
    use mineru_operator::{
        gates::{Check, Samples, Source, round},
        rollout::{AnalysisRequest, Baseline},
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
    let spec: PrometheusSpec =
        serde_json::from_value(serde_json::json!({"address": prometheus.url()})).unwrap();
    let source = PrometheusSource::new(&spec, None).unwrap();

    let check = |name: &str, ratio: f64, min_samples: f64| {
        Check {
        name: name.into(),
        kind: CheckKind::Promotion,
        tier: Tier::Worker,
        source: Source::Query("max(mineru_worker_errors_ratio{namespace=\"{{namespace}}\",revision=\"{{revision}}\"})".into()),
        threshold: Threshold { max_ratio_to_stable: Some(ratio), ratio_floor: Some(0.001), ..Threshold::default() },
        samples: Some(Samples { query: "sum(mineru_worker_requests_total{revision=\"{{revision}}\"})".into(), min: min_samples }),
        after_steps: Vec::new(),
        on_fail: Policy::Rollback,
        sustained_for: Duration::ZERO,
    }
    };
    let revisions = |suffix: &str| Revisions {
        model_revision: format!("m-{suffix}"),
        worker_revision: format!("w-{suffix}"),
    };
    let request = AnalysisRequest {
        checks: vec![
            check("lenient", 2.0, 100.0),
            check("strict", 1.05, 100.0),
            check("starved", 2.0, 1000.0),
        ],
        judged: revisions("canary"),
        baseline: Some(Baseline::Stable(revisions("stable"))),
        quality: None,
    };
    let subject = round::Subject {
        namespace: "parsing",
        name: "docs",
        interval: Duration::from_secs(60),
    };
    let results = round::run(&request, subject, &source).await;

    let verdicts: Vec<_> = results
        .iter()
        .map(|r| (r.name.as_str(), r.evaluation.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("lenient", Verdict::Pass),
            ("strict", Verdict::Fail),
            ("starved", Verdict::Inconclusive)
        ]
    );
    let strict = &results[1];
    assert_eq!(strict.revision, "w-canary");
    assert_eq!(strict.evaluation.value, Some(0.03));
    assert_eq!(strict.evaluation.stable_value, Some(0.02));
    assert_eq!(
        strict.query.as_deref(),
        Some("max(mineru_worker_errors_ratio{namespace=\"parsing\",revision=\"w-canary\"})")
    );
}

/// Every built-in query (values and sample counts) is PromQL a real Prometheus accepts; with no
/// such series scraped they read as no data, never as an error.
#[tokio::test]
async fn every_built_in_query_is_accepted_by_prometheus() {
    let (_exporter, _prometheus, source) = setup("gates-builtins").await;
    let analysis = serde_json::from_value(serde_json::json!({
        "prometheus": {"address": "http://unused:9090"},
        "quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}
    }))
    .unwrap();
    let checks = gates::checks(&analysis, false);
    let mut read = 0;
    for check in &checks {
        let templates = match &check.source {
            Source::Query(query) => {
                std::iter::once(query).chain(check.samples.as_ref().map(|s| &s.query))
            }
            _ => continue,
        };
        for template in templates {
            let context = Context {
                namespace: "parsing",
                name: "docs",
                revision: "w-19ab",
                canary_revision: "w-19ab",
                stable_revision: "w-88c2",
                tier: check.tier,
                interval: Duration::from_secs(60),
            };
            let query = template::render(template, &context).unwrap();
            let reading = source.read(&query).await;
            assert!(
                !matches!(reading, Reading::Error(_)),
                "{}: {query}: {reading:?}",
                check.name
            );
            read += 1;
        }
    }
    assert!(read >= 10, "{read} queries read");
}
