//! The SLO rules file with the real promtool: it loads, its unit tests pass (every alert fires
//! on its series and stays quiet just short of them), and every alert carries what the runbooks
//! and Alertmanager routes rely on: the documented name, a `severity`, and a runbook anchor that
//! docs/runbooks.md has.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use mineru_e2e::{
    repo_path,
    rules::{RULES_FILE, RUNBOOK_ANCHORS, rules},
    which,
};
use serde_yaml::Value;

const TESTS: &str = "e2e/testdata/prometheus-rules-test.yaml";
const RUNBOOKS: &str = "https://github.com/mineru-dev/mineru-operator/blob/main/docs/runbooks.md#";

/// Runbooks, docs and routes name these alerts: renaming one breaks them silently.
const ALERTS: [&str; 13] = [
    "MineruDocumentLatencyHigh",
    "MineruErrorRatioHigh",
    "MineruVllmDown",
    "MineruWorkersDown",
    "MineruThroughputLow",
    "MineruBreakerOpen",
    "MineruVllmQueueHigh",
    "MineruRolloutStuck",
    "MineruRollbackHappened",
    "MineruGateQueriesFailing",
    "MineruOperatorNotReconciling",
    "MineruAvailabilityBudgetBurn",
    "MineruVllmUptimeBudgetBurn",
];

/// promtool ships in the Debian `prometheus` package, found on PATH like `prometheus` itself.
fn promtool() -> PathBuf {
    which("promtool")
        .expect("promtool is not installed: run `make deps` (Debian package `prometheus`)")
}

fn run_promtool(args: &[&str]) {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn yaml(relative: &str) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo_path(relative)).unwrap()).unwrap()
}

fn alerting_rules() -> Vec<serde_json::Value> {
    rules()
        .into_iter()
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}

#[test]
fn the_rules_load_and_their_unit_tests_pass() {
    run_promtool(&["check", "rules", RULES_FILE]);
    run_promtool(&["test", "rules", TESTS]);
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_runbook() {
    let rules = alerting_rules();
    let names: BTreeSet<&str> = rules
        .iter()
        .map(|rule| rule["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(ALERTS),
        "the alerts are renamed or missing"
    );
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap();
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("page" | "ticket")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: no {key}");
        }
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = runbook.strip_prefix(RUNBOOKS);
        assert!(
            anchor.is_some_and(|anchor| RUNBOOK_ANCHORS.contains(&anchor)),
            "{name}: runbook_url {runbook:?} is not a section of docs/runbooks.md"
        );
    }
}

#[test]
fn every_alert_is_tested_firing_and_quiet() {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in yaml(TESTS)["tests"].as_sequence().unwrap() {
        let Some(cases) = test["alert_rule_test"].as_sequence() else {
            continue;
        };
        let named: BTreeSet<&str> = cases
            .iter()
            .map(|case| case["alertname"].as_str().unwrap())
            .collect();
        // A block naming most alerts is a healthy baseline: quiet there says nothing about
        // one alert's threshold or `for`. Quiet counts in a block about a few alerts, at a
        // time chosen for them.
        let baseline = named.len() * 2 > ALERTS.len();
        for case in cases {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|alerts| !alerts.is_empty());
            if fires {
                firing.insert(name);
            } else if !baseline {
                quiet.insert(name);
            }
        }
    }
    for name in ALERTS {
        assert!(firing.contains(name), "{name}: no test where it fires");
        assert!(
            quiet.contains(name),
            "{name}: no test of its own where it stays quiet (the healthy baseline does not count)"
        );
    }
}
