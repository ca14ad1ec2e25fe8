//! Gate evaluation as a specification: verdict tables, query templates, and the built-in
//! checks merged with the user's.

use std::time::Duration;

use mineru_crds::{AnalysisSpec, CheckKind, Policy, QualityResult, Step, Tier, Verdict};
use mineru_operator::gates::{
    self, Source, Threshold,
    template::{Context, TemplateError, render},
    verdict::{Reading, Readings, evaluate, evaluate_quality},
};
use serde_json::json;

use Reading::{Empty, Error, Value};

fn max(max: f64) -> Threshold {
    Threshold {
        max: Some(max),
        ..Threshold::default()
    }
}

fn min(min: f64) -> Threshold {
    Threshold {
        min: Some(min),
        ..Threshold::default()
    }
}

fn ratio(ratio: f64, floor: Option<f64>) -> Threshold {
    Threshold {
        max_ratio_to_stable: Some(ratio),
        ratio_floor: floor,
        ..Threshold::default()
    }
}

fn readings(value: Reading, stable: Option<Reading>, samples: Option<Reading>) -> Readings {
    Readings {
        value,
        stable,
        samples,
    }
}

#[test]
fn verdicts() {
    // (behaviour, threshold, min samples, readings, verdict)
    let cases = [
        (
            "at max passes",
            max(0.01),
            None,
            readings(Value(0.01), None, None),
            Verdict::Pass,
        ),
        (
            "above max fails",
            max(0.01),
            None,
            readings(Value(0.011), None, None),
            Verdict::Fail,
        ),
        (
            "at min passes",
            min(0.95),
            None,
            readings(Value(0.95), None, None),
            Verdict::Pass,
        ),
        (
            "below min fails",
            min(0.95),
            None,
            readings(Value(0.9), None, None),
            Verdict::Fail,
        ),
        (
            "ratio within stable passes",
            ratio(1.05, None),
            None,
            readings(Value(0.0105), Some(Value(0.01)), None),
            Verdict::Pass,
        ),
        (
            "ratio above stable fails",
            ratio(1.05, None),
            None,
            readings(Value(0.0106), Some(Value(0.01)), None),
            Verdict::Fail,
        ),
        (
            "a zero stable with a floor compares with the floor",
            ratio(1.2, Some(0.01)),
            None,
            readings(Value(0.011), Some(Value(0.0)), None),
            Verdict::Pass,
        ),
        (
            "a zero stable without a floor makes any canary value fail",
            ratio(1.2, None),
            None,
            readings(Value(0.001), Some(Value(0.0)), None),
            Verdict::Fail,
        ),
        (
            "the floor does not excuse a real regression",
            ratio(1.2, Some(0.01)),
            None,
            readings(Value(0.05), Some(Value(0.02)), None),
            Verdict::Fail,
        ),
        (
            "too few samples is inconclusive even when the value fails",
            max(0.01),
            Some(50.0),
            readings(Value(0.5), None, Some(Value(49.0))),
            Verdict::Inconclusive,
        ),
        (
            "too few samples is inconclusive even when the value passes",
            max(0.01),
            Some(50.0),
            readings(Value(0.0), None, Some(Value(3.0))),
            Verdict::Inconclusive,
        ),
        (
            "exactly min samples is enough",
            max(0.01),
            Some(50.0),
            readings(Value(0.0), None, Some(Value(50.0))),
            Verdict::Pass,
        ),
        (
            "no samples series is inconclusive",
            max(0.01),
            Some(50.0),
            readings(Value(0.0), None, Some(Empty)),
            Verdict::Inconclusive,
        ),
        (
            "no series is inconclusive",
            max(0.01),
            None,
            readings(Empty, None, None),
            Verdict::Inconclusive,
        ),
        (
            "NaN is inconclusive",
            max(0.01),
            None,
            readings(Value(f64::NAN), None, None),
            Verdict::Inconclusive,
        ),
        (
            "infinity is inconclusive",
            max(0.01),
            None,
            readings(Value(f64::INFINITY), None, None),
            Verdict::Inconclusive,
        ),
        (
            "a ratio without stable data is inconclusive",
            ratio(1.05, Some(0.01)),
            None,
            readings(Value(0.0), Some(Empty), None),
            Verdict::Inconclusive,
        ),
        (
            "a ratio with NaN stable is inconclusive",
            ratio(1.05, Some(0.01)),
            None,
            readings(Value(0.0), Some(Value(f64::NAN)), None),
            Verdict::Inconclusive,
        ),
        (
            "a value query error is an error",
            max(0.01),
            None,
            readings(Error("connection refused".into()), None, None),
            Verdict::Error,
        ),
        (
            "a stable query error is an error",
            ratio(1.05, None),
            None,
            readings(Value(0.0), Some(Error("timeout".into())), None),
            Verdict::Error,
        ),
        (
            "a samples query error is an error, not inconclusive",
            max(0.01),
            Some(50.0),
            readings(Value(0.0), None, Some(Error("bad_data".into()))),
            Verdict::Error,
        ),
        (
            "every threshold must hold",
            Threshold {
                max: Some(10.0),
                min: Some(1.0),
                ..Threshold::default()
            },
            None,
            readings(Value(0.5), None, None),
            Verdict::Fail,
        ),
    ];
    for (behaviour, threshold, min_samples, readings, expected) in cases {
        let evaluation = evaluate(&threshold, min_samples, &readings);
        assert_eq!(evaluation.verdict, expected, "{behaviour}: {evaluation:?}");
        assert_eq!(
            evaluation.message.is_none(),
            expected == Verdict::Pass,
            "{behaviour}: only a pass needs no reason"
        );
    }
}

#[test]
fn evaluations_never_carry_nan_or_infinity() {
    let evaluation = evaluate(
        &ratio(1.05, None),
        Some(1.0),
        &readings(
            Value(f64::NAN),
            Some(Value(f64::INFINITY)),
            Some(Value(f64::NAN)),
        ),
    );
    assert_eq!(
        (
            evaluation.value,
            evaluation.stable_value,
            evaluation.samples
        ),
        (None, None, None)
    );
}

#[test]
fn messages_give_the_numbers() {
    let cases = [
        (
            max(0.01),
            readings(Value(0.071), None, None),
            None,
            "0.071 > 0.01",
        ),
        (
            ratio(1.05, Some(0.01)),
            readings(Value(0.05), Some(Value(0.002)), None),
            None,
            "0.05 > 1.05 x 0.01 (stable 0.002)",
        ),
        (
            max(1.0),
            readings(Value(0.0), None, Some(Value(12.0))),
            Some(20.0),
            "12 samples, 20 needed",
        ),
        (
            max(1.0),
            readings(Empty, None, None),
            None,
            "no data: the query returned no series",
        ),
        (
            max(1.0),
            readings(Value(f64::NAN), None, None),
            None,
            "value is NaN (no traffic in the window?)",
        ),
        (
            max(1.0),
            readings(Error("connection refused".into()), None, None),
            None,
            "value query failed: connection refused",
        ),
    ];
    for (threshold, readings, min_samples, message) in cases {
        let evaluation = evaluate(&threshold, min_samples, &readings);
        assert_eq!(evaluation.message.as_deref(), Some(message));
    }
}

#[test]
fn thresholds_read_as_words() {
    assert_eq!(max(0.01).describe(), "<= 0.01");
    assert_eq!(min(0.95).describe(), ">= 0.95");
    assert_eq!(ratio(1.05, None).describe(), "<= 1.05 x stable");
    assert_eq!(
        ratio(1.2, Some(0.01)).describe(),
        "<= 1.2 x max(stable, 0.01)"
    );
}

fn document(name: &str, verdict: Verdict) -> QualityResult {
    QualityResult {
        document: name.into(),
        similarity: if verdict == Verdict::Pass { 0.99 } else { 0.5 },
        verdict,
        message: None,
        differences: Vec::new(),
    }
}

#[test]
fn quality_is_the_share_of_golden_documents_that_regressed() {
    let mut results: Vec<_> = (0..99)
        .map(|i| document(&format!("d{i}.pdf"), Verdict::Pass))
        .collect();
    results.push(document("invoice.pdf", Verdict::Fail));
    let one_in_a_hundred = evaluate_quality(&max(0.01), &results, 100);
    assert_eq!(one_in_a_hundred.verdict, Verdict::Pass);
    assert_eq!(one_in_a_hundred.value, Some(0.01));
    assert_eq!(one_in_a_hundred.samples, Some(100.0));
    results.push(document("table.pdf", Verdict::Fail));
    assert_eq!(
        evaluate_quality(&max(0.01), &results, 101).verdict,
        Verdict::Fail
    );
    assert_eq!(
        evaluate_quality(&max(0.01), &[], 50).verdict,
        Verdict::Inconclusive
    );
}

#[test]
fn a_partial_round_waits_unless_its_regressions_already_decide() {
    // (behaviour, passed, regressed, errors, wanted, verdict)
    let cases = [
        ("half done, clean", 25, 0, 0, 50, Verdict::Inconclusive),
        (
            "half done, within what the rest can make up",
            24,
            1,
            0,
            100,
            Verdict::Inconclusive,
        ),
        (
            "half done, beyond whatever the rest say",
            23,
            2,
            0,
            50,
            Verdict::Fail,
        ),
        (
            "done, errors left out of the share",
            47,
            0,
            3,
            50,
            Verdict::Pass,
        ),
        (
            "done, nothing comparable",
            0,
            0,
            50,
            50,
            Verdict::Inconclusive,
        ),
    ];
    for (behaviour, passed, regressed, errors, wanted, expected) in cases {
        let results: Vec<_> = (0..passed)
            .map(|i| document(&format!("p{i}"), Verdict::Pass))
            .chain((0..regressed).map(|i| document(&format!("f{i}"), Verdict::Fail)))
            .chain((0..errors).map(|i| document(&format!("e{i}"), Verdict::Error)))
            .collect();
        let evaluation = evaluate_quality(&max(0.01), &results, wanted);
        assert_eq!(evaluation.verdict, expected, "{behaviour}: {evaluation:?}");
    }
}

fn context() -> Context<'static> {
    Context {
        namespace: "parsing",
        name: "docs",
        revision: "w-19ab",
        canary_revision: "w-19ab",
        stable_revision: "w-88c2",
        tier: Tier::Worker,
        interval: Duration::from_secs(60),
        window: Duration::from_secs(5400),
    }
}

#[test]
fn templates_fill_every_placeholder() {
    let template = "{{namespace}} {{name}} {{revision}} {{canaryRevision}} {{stableRevision}} {{tier}} {{interval}} {{window}} {{ revision }}";
    assert_eq!(
        render(template, &context()).unwrap(),
        "parsing docs w-19ab w-19ab w-88c2 worker 60s 5400s w-19ab"
    );
}

#[test]
fn templates_refuse_unknown_or_unclosed_placeholders() {
    assert_eq!(
        render(r#"up{rev="{{revison}}"}"#, &context()),
        Err(TemplateError::UnknownPlaceholder("revison".into()))
    );
    assert_eq!(
        render("rate(x[{{interval]", &context()),
        Err(TemplateError::Unclosed(7))
    );
    assert_eq!(
        TemplateError::UnknownPlaceholder("revison".into()).to_string(),
        "unknown placeholder {{revison}} in query template (known: namespace, name, revision, canaryRevision, stableRevision, tier, interval, window)"
    );
}

#[test]
fn intervals_render_as_promql_durations() {
    let cases = [
        (60_000, "60s"),
        (90_000, "90s"),
        (1_500, "1500ms"),
        (3_600_000, "3600s"),
    ];
    for (millis, text) in cases {
        let context = Context {
            interval: Duration::from_millis(millis),
            ..context()
        };
        assert_eq!(render("{{interval}}", &context).unwrap(), text);
    }
}

#[test]
fn text_without_placeholders_is_unchanged() {
    let query = r#"sum(rate(x{a="b"}[5m])) by (le)"#;
    assert_eq!(render(query, &context()).unwrap(), query);
}

/// The default steps: 10%, 50%, 100%.
fn steps() -> Vec<Step> {
    serde_json::from_value(json!([{"weight": 10}, {"weight": 50}, {"weight": 100}])).unwrap()
}

fn analysis(extra: serde_json::Value) -> AnalysisSpec {
    let mut spec = json!({"prometheus": {"address": "http://prometheus:9090"}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(spec).unwrap()
}

#[test]
fn every_built_in_query_renders() {
    let spec =
        analysis(json!({"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}}}));
    for check in gates::checks(&spec, &steps(), false) {
        for query in check.source.templates() {
            let rendered =
                render(query, &context()).unwrap_or_else(|e| panic!("{}: {e}", check.name));
            assert!(!rendered.contains("{{"), "{}: {rendered}", check.name);
            assert!(
                rendered.contains(r#"revision="w-19ab""#),
                "{}: {rendered}",
                check.name
            );
        }
    }
}

#[test]
fn built_ins_follow_the_go_no_go_table() {
    let checks = gates::checks(&analysis(json!({})), &steps(), false);
    // (name, kind, steps gated, threshold, on fail)
    let table = [
        (
            "error-ratio",
            CheckKind::Promotion,
            vec![0],
            "<= 1.05 x max(stable, 0.01)",
            Policy::Rollback,
        ),
        (
            "latency-p95",
            CheckKind::Promotion,
            vec![0],
            "<= 1.1 x max(stable, 1)",
            Policy::Rollback,
        ),
        (
            "error-ratio",
            CheckKind::Promotion,
            vec![1],
            "<= 1.02 x max(stable, 0.01)",
            Policy::Hold,
        ),
        (
            "latency-p95",
            CheckKind::Promotion,
            vec![1],
            "<= 1.05 x max(stable, 1)",
            Policy::Hold,
        ),
        (
            "throughput",
            CheckKind::Promotion,
            vec![1],
            "<= 1.0526315789473684 x max(stable, 0.01)",
            Policy::Hold,
        ),
        (
            "truncated-answers",
            CheckKind::Promotion,
            vec![0],
            "<= 1.5 x max(stable, 0.02)",
            Policy::Rollback,
        ),
        (
            "repetition",
            CheckKind::Promotion,
            vec![1],
            "<= 1.25 x max(stable, 0.02)",
            Policy::Hold,
        ),
        (
            "empty-pages",
            CheckKind::Promotion,
            vec![0],
            "<= 1.5 x max(stable, 0.02)",
            Policy::Rollback,
        ),
        (
            "layout-mix",
            CheckKind::Promotion,
            vec![0],
            "distance to stable <= 0.1",
            Policy::Rollback,
        ),
        (
            "blocks-per-page",
            CheckKind::Promotion,
            vec![1],
            "distance to stable <= 0.1",
            Policy::Hold,
        ),
        (
            "slo-error-ratio",
            CheckKind::Promotion,
            vec![2],
            "<= 0.02",
            Policy::Hold,
        ),
        (
            "slo-latency-p95",
            CheckKind::Promotion,
            vec![2],
            "<= 90",
            Policy::Hold,
        ),
        (
            "vllm-restarts",
            CheckKind::Promotion,
            vec![],
            "<= 0",
            Policy::Rollback,
        ),
        (
            "breaker-opens",
            CheckKind::Promotion,
            vec![],
            "<= 4",
            Policy::Rollback,
        ),
        (
            "vllm-queue-depth",
            CheckKind::Promotion,
            vec![],
            "<= 2 x max(stable, 1)",
            Policy::Hold,
        ),
        (
            "vllm-ttft-p95",
            CheckKind::Promotion,
            vec![],
            "<= 1.1 x max(stable, 0.1)",
            Policy::Hold,
        ),
    ];
    for (name, kind, steps, threshold, on_fail) in table {
        let found = checks
            .iter()
            .find(|c| c.name == name && c.kind == kind && c.after_steps == steps)
            .unwrap_or_else(|| panic!("{name} {steps:?} missing"));
        assert_eq!(found.threshold.describe(), threshold, "{name}");
        assert_eq!(found.on_fail, on_fail, "{name}");
    }
    let triggers: Vec<_> = checks
        .iter()
        .filter(|c| c.kind == CheckKind::Trigger)
        .map(|c| {
            (
                c.name.as_str(),
                c.threshold.describe(),
                c.sustained_for.as_secs(),
            )
        })
        .collect();
    assert_eq!(
        triggers,
        [
            ("error-spike", "<= 1.2 x max(stable, 0.01)".to_owned(), 900),
            ("latency-spike", "<= 120".to_owned(), 900),
            ("vllm-crashloop", "<= 3".to_owned(), 0),
        ]
    );
}

#[test]
fn built_ins_follow_the_step_list_not_fixed_indexes() {
    // Two steps: leaving 25% is "leaving 10%"; there is no 50% step; the last is 100%.
    let two: Vec<Step> = serde_json::from_value(json!([{"weight": 25}, {"weight": 100}])).unwrap();
    let checks = gates::checks(&analysis(json!({})), &two, false);
    let gating = |name: &str| {
        checks
            .iter()
            .filter(|c| c.name == name && c.kind == CheckKind::Promotion)
            .map(|c| c.after_steps.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(gating("error-ratio"), [vec![0]]);
    assert_eq!(gating("throughput"), Vec::<Vec<i32>>::new());
    assert_eq!(gating("slo-error-ratio"), [vec![1]]);
    // A single 100% step has only the SLOs (and the guards).
    let one: Vec<Step> = serde_json::from_value(json!([{"weight": 100}])).unwrap();
    let checks = gates::checks(&analysis(json!({})), &one, false);
    assert!(!checks.iter().any(|c| c.name == "error-ratio"));
    assert!(
        checks
            .iter()
            .any(|c| c.name == "slo-latency-p95" && c.after_steps == [0])
    );
}

#[test]
fn statistical_built_ins_read_counts_and_buckets_over_the_evidence_window() {
    let checks = gates::checks(&analysis(json!({})), &steps(), false);
    let source = |name: &str| {
        checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.source.clone())
            .unwrap()
    };
    let Source::Proportion { bad, total } = source("error-ratio") else {
        panic!("error-ratio is a proportion");
    };
    assert_eq!(
        render(&bad, &context()).unwrap(),
        r#"sum(increase(mineru_worker_requests_total{namespace="parsing",revision="w-19ab",outcome=~"error|timeout|rejected"}[5400s]))"#
    );
    assert_eq!(
        render(&total, &context()).unwrap(),
        r#"sum(increase(mineru_worker_requests_total{namespace="parsing",revision="w-19ab",outcome!~"client_error|deferred"}[5400s]))"#
    );
    let Source::Quantile { q, buckets } = source("latency-p95") else {
        panic!("latency-p95 is a quantile");
    };
    assert_eq!(q, 0.95);
    assert_eq!(
        render(&buckets, &context()).unwrap(),
        r#"sum by (le) (increase(mineru_worker_request_duration_seconds_bucket{namespace="parsing",revision="w-19ab"}[5400s]))"#
    );
    // Throughput is each document's seconds per page, not pods over pages per second.
    let Source::Quantile { q, buckets } = source("throughput") else {
        panic!("throughput is a quantile");
    };
    assert_eq!(q, 0.5);
    assert!(
        buckets.contains("mineru_worker_page_duration_seconds_bucket"),
        "{buckets}"
    );
    // How the canary reads: flagged documents among those extracted, and distributions.
    let Source::Proportion { bad, total } = source("truncated-answers") else {
        panic!("truncated-answers is a proportion");
    };
    assert_eq!(
        render(&bad, &context()).unwrap(),
        r#"sum(increase(mineru_worker_flagged_documents_total{namespace="parsing",revision="w-19ab",signal="truncated"}[5400s]))"#
    );
    assert_eq!(
        render(&total, &context()).unwrap(),
        r#"sum(increase(mineru_worker_documents_total{namespace="parsing",revision="w-19ab"}[5400s]))"#
    );
    let Source::Distribution {
        counts,
        units,
        min_samples,
    } = source("layout-mix")
    else {
        panic!("layout-mix is a distribution");
    };
    assert_eq!(
        render(&counts, &context()).unwrap(),
        r#"sum by (block_type) (increase(mineru_worker_blocks_total{namespace="parsing",revision="w-19ab"}[5400s]))"#
    );
    assert_eq!(min_samples, 30.0, "evidence.minDocuments");
    assert_eq!(
        render(&units, &context()).unwrap(),
        render(&total, &context()).unwrap()
    );
    let Source::Distribution { counts, .. } = source("blocks-per-page") else {
        panic!("blocks-per-page is a distribution");
    };
    assert!(counts.starts_with("sum by (le) (increase(mineru_worker_page_blocks_bucket{"));
}

/// The throughput criterion's verdict for a canary at `share` of the baseline's pages per
/// second, on plenty of documents with a tight per-page time.
fn throughput_at(migrating: bool, share: f64) -> Verdict {
    use mineru_operator::evidence::{self, Confidence, Histogram, Outcome};
    let checks = gates::checks(&analysis(json!({})), &steps(), migrating);
    let throughput = checks.iter().find(|c| c.name == "throughput").unwrap();
    let Source::Quantile { q, .. } = throughput.source else {
        panic!("a quantile");
    };
    // Every document between 0.99 and 1.01 × its revision's seconds per page.
    let around = |seconds: f64| {
        Histogram::new(vec![
            (seconds * 0.99, 0.0),
            (seconds * 1.01, 10_000.0),
            (f64::INFINITY, 10_000.0),
        ])
        .unwrap()
    };
    let baseline = 2.0;
    let confidence = Confidence {
        false_fail: 0.01,
        false_pass: 0.05,
        regression: 3.0,
    };
    match evidence::quantile(
        &around(baseline / share),
        Some(&around(baseline)),
        q,
        &throughput.threshold,
        &confidence,
    )
    .outcome
    {
        Outcome::Accept => Verdict::Pass,
        Outcome::Reject => Verdict::Fail,
        Outcome::Continue => Verdict::Inconclusive,
    }
}

#[test]
fn the_throughput_criterion_needs_95_percent_of_stable_pages_per_second() {
    assert_eq!(throughput_at(false, 0.97), Verdict::Pass);
    assert_eq!(throughput_at(false, 0.93), Verdict::Fail);
}

#[test]
fn a_migration_from_a_monolith_needs_115_percent_of_its_pages_per_second() {
    assert_eq!(throughput_at(true, 1.17), Verdict::Pass);
    assert_eq!(throughput_at(true, 1.13), Verdict::Fail);
    assert_eq!(throughput_at(true, 1.0), Verdict::Fail);
}

#[test]
fn quality_checks_exist_only_when_the_quality_gate_is_configured() {
    let without = gates::checks(&analysis(json!({})), &steps(), false);
    assert!(without.iter().all(|c| c.source != Source::Quality));
    let with = gates::checks(
        &analysis(
            json!({"quality": {"goldenDocuments": {"configMapRef": {"name": "golden"}}, "maxRegression": 0.02}}),
        ),
        &steps(),
        false,
    );
    let quality: Vec<_> = with
        .iter()
        .filter(|c| c.source == Source::Quality)
        .map(|c| (c.name.as_str(), c.threshold.describe()))
        .collect();
    assert_eq!(
        quality,
        [
            ("quality", "<= 0.02".to_owned()),
            ("quality", "<= 0.02".to_owned()),
            ("quality-collapse", "<= 0.05".to_owned())
        ]
    );
}

#[test]
fn with_a_quality_gate_worker_comparisons_are_split_by_who_sent_the_documents() {
    let quality = |count: bool| {
        analysis(json!({"quality": {
            "goldenDocuments": {"configMapRef": {"name": "golden"}},
            "probes": {"countAsEvidence": count}}}))
    };
    let templates = |check: &gates::Check| -> Vec<String> {
        check
            .source
            .templates()
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let split = gates::checks(&quality(true), &steps(), false);
    let find = |name: &str| split.iter().find(|c| c.name == name).unwrap();
    let (clients, probes) = (find("error-ratio"), find("error-ratio-probes"));
    assert_eq!(probes.stands_for.as_deref(), Some("error-ratio"));
    assert!(
        templates(clients)
            .iter()
            .all(|t| t.contains(r#"source!~"probe|golden""#))
    );
    assert!(
        templates(probes)
            .iter()
            .all(|t| t.contains(r#"source=~"probe|golden""#))
    );
    assert!(split.iter().any(|c| c.name == "layout-mix-probes"));
    // Absolute bounds and the GPU tier stay whole.
    for whole in ["slo-error-ratio", "breaker-opens", "vllm-ttft-p95"] {
        assert!(
            !split.iter().any(|c| c.name == format!("{whole}-probes")),
            "{whole}"
        );
        assert!(
            templates(find(whole)).iter().all(|t| !t.contains("source")),
            "{whole}"
        );
    }
    // Without the probes as evidence, every built-in reads clients' documents only.
    let clients_only = gates::checks(&quality(false), &steps(), false);
    assert!(!clients_only.iter().any(|c| c.name.ends_with("-probes")));
    for template in clients_only.iter().flat_map(templates) {
        assert!(template.contains(r#"source!~"probe|golden""#), "{template}");
    }
    // Without a quality gate there are no operator documents to tell apart.
    let plain = gates::checks(&analysis(json!({})), &steps(), false);
    assert!(
        plain
            .iter()
            .flat_map(templates)
            .all(|t| !t.contains("source"))
    );
}

#[test]
fn a_user_entry_replaces_every_built_in_of_its_name_and_kind() {
    let spec = analysis(json!({
        "promotionCriteria": [{"name": "error-ratio", "query": "q", "max": 0.02}],
        "rollbackTriggers": [{"name": "latency-spike", "query": "q", "max": 60, "for": "5m"}],
    }));
    let checks = gates::checks(&spec, &steps(), false);
    let error_ratio: Vec<_> = checks.iter().filter(|c| c.name == "error-ratio").collect();
    assert_eq!(error_ratio.len(), 1);
    assert_eq!(error_ratio[0].threshold.describe(), "<= 0.02");
    assert_eq!(error_ratio[0].after_steps, Vec::<i32>::new());
    let spike = checks.iter().find(|c| c.name == "latency-spike").unwrap();
    assert_eq!(spike.sustained_for, Duration::from_secs(300));
    assert!(
        checks.iter().any(|c| c.name == "latency-p95"),
        "others stay"
    );
}

#[test]
fn default_criteria_false_keeps_only_the_users_checks() {
    let spec = analysis(json!({
        "defaultCriteria": false,
        "promotionCriteria": [{"name": "custom", "query": "q", "samplesQuery": "s", "minSamples": 10, "min": 1}],
    }));
    let checks = gates::checks(&spec, &steps(), false);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].name, "custom");
    let Source::Value { samples, .. } = &checks[0].source else {
        panic!("a value check");
    };
    assert_eq!(
        samples.as_ref().map(|s| (s.query.as_str(), s.min)),
        Some(("s", 10.0))
    );
}

#[test]
fn a_criterion_gates_only_its_steps() {
    let spec = analysis(json!({
        "defaultCriteria": false,
        "promotionCriteria": [
            {"name": "first", "query": "q", "max": 1, "afterSteps": [0]},
            {"name": "every", "query": "q", "max": 1},
        ],
        "rollbackTriggers": [{"name": "watch", "query": "q", "max": 1}],
    }));
    let checks = gates::checks(&spec, &steps(), false);
    let gating = |step| {
        checks
            .iter()
            .filter(|c| c.gates_step(step))
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(gating(0), ["first", "every"]);
    assert_eq!(gating(1), ["every"]);
}

#[test]
fn user_checks_read_the_source_they_name() {
    let spec = analysis(json!({
        "defaultCriteria": false,
        "promotionCriteria": [
            {"name": "errors", "proportion": {"bad": "b", "total": "t"}, "max": 0.02},
            {"name": "slow", "quantile": {"q": 0.9, "buckets": "h"}, "max": 30},
        ],
    }));
    let checks = gates::checks(&spec, &steps(), false);
    assert_eq!(
        checks[0].source,
        Source::Proportion {
            bad: "b".into(),
            total: "t".into()
        }
    );
    assert_eq!(
        checks[1].source,
        Source::Quantile {
            q: 0.9,
            buckets: "h".into()
        }
    );
    assert!(checks.iter().all(|c| c.source.evidence_backed()));
}
