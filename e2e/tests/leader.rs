//! Leader election on the real control plane with two live replicas: the standby takes over a
//! killed leader's rollout within a lease and a renewal period, no step repeated or skipped; and
//! a leader frozen (SIGSTOP) past its lease writes nothing once it wakes, and exits.

use std::time::{Duration, Instant};

use mineru_e2e::{
    audit,
    controlplane::{ControlPlane, Nodes, OPERATOR_NAMESPACE},
    operator::get_json,
    scenario::{NAMESPACE, Scenario, assert_no_step_announced_twice, pair},
    wait_until,
};
use serde_json::Value;

/// Writes the replica `identity` made, of `events`.
fn writes_by(events: &[Value], identity: &str) -> Vec<String> {
    audit::writes(
        events
            .iter()
            .filter(|event| audit::sent_by(event, identity)),
    )
}

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

#[test]
fn a_standby_finishes_a_killed_leaders_rollout_and_a_frozen_leader_writes_nothing_after_waking() {
    let mut scenario = Scenario::start("leader", &Nodes::default());
    scenario.settle_on_stable();
    let canary = scenario.canary.clone();
    let mut standby = scenario.start_operator("standby-1");
    assert_eq!(lease_holder(&scenario.plane).as_deref(), Some("operator-0"));
    let audit = audit::events(&scenario.plane);
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
    assert_no_step_announced_twice(&scenario.plane);

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
    let woken_at = audit::events(&scenario.plane).len();
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
    let after = audit::events(&scenario.plane);
    assert_eq!(
        writes_by(&after[woken_at..], "standby-1"),
        Vec::<String>::new(),
        "nothing written after waking"
    );
    second.ensure_running().unwrap();
}
