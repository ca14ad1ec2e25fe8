//! Leader election on the real control plane with two live replicas: the standby takes over a
//! killed leader's rollout within a lease and a renewal period, no step repeated or skipped; and
//! a leader frozen (SIGSTOP) past its lease writes nothing once it wakes, and exits.

use std::time::{Duration, Instant};

use mineru_e2e::{
    controlplane::{ControlPlane, Nodes, OPERATOR_NAMESPACE},
    operator::get_json,
    scenario::{NAMESPACE, Scenario, event_notes, pair},
    wait_until,
};
use serde_json::Value;

/// What `e2e/src/operator.rs` passes as `--lease-duration-seconds`.
const LEASE: Duration = Duration::from_secs(6);
/// The renewal period the operator derives from it (a seventh), rounded up.
const PERIOD: Duration = Duration::from_secs(1);

fn lease_holder(plane: &ControlPlane) -> Option<String> {
    let lease = get_json(
        plane,
        &["get", "lease", "mineru-operator", "-n", OPERATOR_NAMESPACE],
    )
    .ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

fn wait_for_holder(plane: &ControlPlane, identity: &str, budget: Duration) -> Duration {
    let started = Instant::now();
    wait_until(&format!("{identity} to hold the Lease"), budget, || {
        Ok((lease_holder(plane).as_deref() == Some(identity)).then_some(()))
    })
    .unwrap();
    started.elapsed()
}

/// Audit log lines so far, to look only at what comes after.
fn audit_lines(plane: &ControlPlane) -> Vec<Value> {
    std::fs::read_to_string(plane.audit_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Writes the replica `identity` made (its user agent names it), of the audit events given.
fn writes_by(events: &[Value], identity: &str) -> Vec<String> {
    let agent = format!("({identity})");
    events
        .iter()
        .filter(|event| event["stage"] == "ResponseComplete")
        .filter(|event| {
            event["userAgent"]
                .as_str()
                .is_some_and(|ua| ua.contains(&agent))
        })
        .filter(|event| !matches!(event["verb"].as_str(), Some("get" | "list" | "watch")))
        .map(|event| {
            format!(
                "{} {} {}",
                event["verb"], event["objectRef"]["resource"], event["objectRef"]["name"]
            )
        })
        .collect()
}

#[test]
fn a_standby_finishes_a_killed_leaders_rollout_and_a_frozen_leader_writes_nothing_after_waking() {
    let mut scenario = Scenario::start("leader", &Nodes::default());
    scenario.settle_on_stable();
    let canary = scenario.canary.clone();
    let mut standby = scenario.start_operator("standby-1");
    assert_eq!(lease_holder(&scenario.plane).as_deref(), Some("operator-0"));
    let audit = audit_lines(&scenario.plane);
    assert!(
        !writes_by(&audit, "operator-0").is_empty(),
        "the leader writes"
    );
    assert!(
        writes_by(&audit, "standby-1")
            .iter()
            .all(|write| write.contains("leases")),
        "the standby writes nothing but, at most, a Lease it found free"
    );

    // Kill the leader at the first step; the standby takes over within a lease and a period.
    scenario.begin_canary();
    let mut leader = scenario.take_operator();
    leader.kill();
    let took = wait_for_holder(&scenario.plane, "standby-1", LEASE * 3);
    // Polling kubectl adds up to a second or two.
    assert!(
        took <= LEASE + PERIOD + Duration::from_secs(3),
        "took over after {took:?}"
    );
    let promoted = wait_until("the standby to promote", Duration::from_secs(240), || {
        standby.ensure_running()?;
        let status =
            get_json(&scenario.plane, &["get", "mdep", "docs", "-n", NAMESPACE])?["status"].clone();
        let done = status["phase"] == "Healthy"
            && pair(&status, "stable")
                == Some((
                    canary.model_revision.clone(),
                    canary.worker_revision.clone(),
                ));
        Ok(done.then_some(status))
    })
    .unwrap();
    assert!(promoted["canary"].is_null(), "{promoted}");
    let notes = event_notes(&scenario.plane);
    for step in [
        "CanaryReady: canary ",
        "StepCompleted: step 1/3 (10%) completed: gates passed; now 50%",
        "StepCompleted: step 2/3 (50%) completed: gates passed; now 100%",
        "Promoted: promoted ",
    ] {
        let count = notes.lines().filter(|line| line.starts_with(step)).count();
        assert_eq!(count, 1, "{step}\n{notes}");
    }

    // Freeze the leader past its lease; a second standby takes over meanwhile.
    let mut second = scenario.start_operator("standby-2");
    standby.freeze();
    wait_for_holder(&scenario.plane, "standby-2", LEASE * 3);
    // Work for both: the frozen one would find it waiting when it wakes.
    scenario
        .plane
        .kubectl(&[
            "label",
            "mdep",
            "docs",
            "-n",
            NAMESPACE,
            "e2e/touched=1",
            "--overwrite",
        ])
        .unwrap();
    let woken_at = audit_lines(&scenario.plane).len();
    standby.thaw();
    assert!(
        standby.exits_within(Duration::from_secs(30)),
        "a leader that lost its Lease stops"
    );
    assert!(
        standby.log().contains("lost leadership"),
        "{}",
        standby.log()
    );
    let after = audit_lines(&scenario.plane);
    assert_eq!(
        writes_by(&after[woken_at..], "standby-1"),
        Vec::<String>::new(),
        "nothing written after waking"
    );
    second.ensure_running().unwrap();
}
