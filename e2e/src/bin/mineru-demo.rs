//! The local demo: a real Kubernetes control plane, Prometheus, workers and the vLLM simulator
//! on this machine, about a document a second; a model upgrade rolls out 25% -> 50% -> 100% and
//! is promoted once each step's documents are enough for the built-in checks, then an upgrade
//! whose vLLM fails a share of documents is rolled back by them. Progress is printed as the
//! operator writes it.

use std::{process::ExitCode, thread, time::Duration};

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{Routing, Scenario, Setup, check, pair},
};
use serde_json::Value;

fn main() -> ExitCode {
    println!(
        "== 1/2 a healthy model upgrade: canary of both tiers, 25% -> 50% -> 100%, each step left once its documents are enough =="
    );
    let setup = || Setup::built_ins(Routing::Gateway);
    let mut healthy = Scenario::start_with("demo-promote", &Nodes::default(), setup());
    healthy.settle_on_stable();
    print_status("stable", &healthy.status());
    let canary = healthy.canary.clone();
    healthy.apply_canary();
    follow(&mut healthy, |s| {
        s["phase"] == "Healthy"
            && pair(s, "stable")
                == Some((
                    canary.model_revision.clone(),
                    canary.worker_revision.clone(),
                ))
    });
    let (ok, failed) = healthy.load.answers(&canary.worker_revision);
    println!("   the canary answered {ok} documents ({failed} failed) while it rolled out");
    drop(healthy);

    println!();
    println!(
        "== 2/2 a bad model upgrade: the canary's vLLM fails 60% of its calls after taking traffic =="
    );
    let mut bad = Scenario::start_with("demo-rollback", &Nodes::default(), setup());
    bad.settle_on_stable();
    bad.apply_canary();
    follow(&mut bad, |s| {
        s["canaryWeight"].as_i64().is_some_and(|w| w > 0)
    });
    println!("   injecting 503s into 60% of the canary vLLM's calls");
    bad.fail_canary_vllm_at(0.6);
    let rolled_back = follow(&mut bad, |s| {
        s["phase"] == "Degraded" && s["lastRollback"].is_object()
    });
    let evidence = &rolled_back["lastRollback"];
    println!(
        "   rolled back: {} on {} (value {}, threshold {})",
        evidence["reason"].as_str().unwrap_or("-"),
        evidence["check"].as_str().unwrap_or("-"),
        evidence["value"],
        evidence["threshold"].as_str().unwrap_or("-")
    );
    println!("   query: {}", evidence["query"].as_str().unwrap_or("-"));
    if let Some(errors) = check(&rolled_back, "error-ratio", "Promotion") {
        let number = |v: &Value| v.as_f64().unwrap_or(0.0);
        println!(
            "   error ratio: canary {:.2} over {:.0} documents, stable {:.2} over {:.0}",
            number(&errors["value"]),
            number(&errors["samples"]),
            number(&errors["stableValue"]),
            number(&errors["stableSamples"])
        );
    }
    println!();
    println!("Both rollouts decided on their own. Component logs: target/e2e/demo-*/logs");
    ExitCode::SUCCESS
}

/// A status line without its countdowns (`9m38s left`), so that only news is printed.
fn without_times(line: &str) -> String {
    line.split_whitespace()
        .filter(|word| {
            let word = word.trim_end_matches(',');
            !(word.chars().next().is_some_and(|c| c.is_ascii_digit())
                && word.ends_with(['s', 'm', 'h'])
                && word
                    .chars()
                    .all(|c| c.is_ascii_digit() || "smh".contains(c)))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints every change of phase, step, weight or message until `done`.
fn follow(scenario: &mut Scenario, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = String::new();
    for _ in 0..2400 {
        let status = scenario.status();
        let line = format!(
            "{} step={} weight={} {}",
            status["phase"].as_str().unwrap_or("-"),
            status["currentStep"],
            status["canaryWeight"],
            status["message"].as_str().unwrap_or("")
        );
        if without_times(&line) != without_times(&last) {
            println!("   {line}");
            last = line;
        }
        if done(&status) {
            return status;
        }
        thread::sleep(Duration::from_millis(300));
    }
    panic!("the rollout did not finish in time; last status: {last}");
}

fn print_status(label: &str, status: &Value) {
    println!(
        "   {label}: {} — {}",
        status["phase"].as_str().unwrap_or("-"),
        status["message"].as_str().unwrap_or("")
    );
}
