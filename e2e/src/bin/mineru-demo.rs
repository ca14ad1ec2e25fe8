//! The local demo: a real Kubernetes control plane, Prometheus, workers and the vLLM simulator
//! on this machine; a model upgrade rolls out 10% -> 50% -> 100% and is promoted, then an upgrade
//! whose vLLM fails is rolled back on its own. Progress is printed as the operator writes it.

use std::{process::ExitCode, thread, time::Duration};

use mineru_e2e::{
    controlplane::Nodes,
    scenario::{Scenario, pair},
};
use serde_json::Value;

fn main() -> ExitCode {
    println!("== 1/2 a healthy model upgrade: canary of both tiers, 10% -> 50% -> 100% ==");
    let mut healthy = Scenario::start("demo-promote", &Nodes::default());
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
    println!("== 2/2 a bad model upgrade: the canary's vLLM fails after taking traffic ==");
    let mut bad = Scenario::start("demo-rollback", &Nodes::default());
    bad.settle_on_stable();
    bad.apply_canary();
    follow(&mut bad, |s| {
        s["canaryWeight"].as_i64().is_some_and(|w| w > 0)
    });
    println!("   injecting 503s into the canary vLLM");
    bad.fail_canary_vllm();
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
    println!();
    println!("Both rollouts decided on their own. Component logs: target/e2e/demo-*/logs");
    ExitCode::SUCCESS
}

/// Prints every change of phase, step, weight or message until `done`.
fn follow(scenario: &mut Scenario, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = String::new();
    for _ in 0..1200 {
        let status = scenario.status();
        let line = format!(
            "{} step={} weight={} {}",
            status["phase"].as_str().unwrap_or("-"),
            status["currentStep"],
            status["canaryWeight"],
            status["message"].as_str().unwrap_or("")
        );
        if line != last {
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
