//! The status the operator writes: generation, phase, message, revisions, tier readiness and
//! the Available / Progressing / Degraded conditions.
//!
//! Condition semantics:
//! - Available: both stable tiers have a ready replica (or are scaled to zero).
//! - Progressing: a canary runs beside stable, or a tier has fewer ready replicas than desired.
//! - Degraded: Available went False after having been True; it stays until Available returns,
//!   so a first start-up is Progressing, never Degraded.
//!
//! Phase: Degraded, else Progressing, else Healthy. Fields this module does not compute (the
//! rollout engine's step, weight, checks, …) are carried over unchanged.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::apps::v1::{Deployment, StatefulSet},
    apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time},
};
use mineru_crds::{MineruDeployment, MineruDeploymentStatus, Phase, TierStatus, TierStatuses};

use super::Topology;
use crate::labels;

/// Condition type: the stable tiers serve.
pub const AVAILABLE: &str = "Available";
/// Condition type: a canary or a scale-up is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: a tier that was available is not.
pub const DEGRADED: &str = "Degraded";

/// Ready replicas per revision, from the workloads' own status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadyReplicas {
    /// Ready vLLM replicas per model revision.
    pub models: BTreeMap<String, i32>,
    /// Ready workers per worker revision.
    pub workers: BTreeMap<String, i32>,
}

impl ReadyReplicas {
    /// Reads `readyReplicas` of the observed StatefulSets and Deployments.
    pub fn observe(statefulsets: &[StatefulSet], deployments: &[Deployment]) -> Self {
        fn revision(meta: &ObjectMeta) -> Option<String> {
            meta.labels.as_ref()?.get(labels::REVISION).cloned()
        }
        ReadyReplicas {
            models: statefulsets
                .iter()
                .filter_map(|s| {
                    let ready = s.status.as_ref().and_then(|st| st.ready_replicas);
                    Some((revision(&s.metadata)?, ready.unwrap_or(0)))
                })
                .collect(),
            workers: deployments
                .iter()
                .filter_map(|d| {
                    let ready = d.status.as_ref().and_then(|st| st.ready_replicas);
                    Some((revision(&d.metadata)?, ready.unwrap_or(0)))
                })
                .collect(),
        }
    }
}

/// The status `md` should have, given what runs; `now` stamps conditions that change.
pub fn desired(
    md: &MineruDeployment,
    topology: &Topology,
    readiness: &ReadyReplicas,
    now: &Time,
) -> MineruDeploymentStatus {
    let old = md.status.clone().unwrap_or_default();
    let generation = md.metadata.generation;
    let stable = &topology.stable;
    let canary = topology.canary.as_ref();

    let model_desired = |revision: &str| {
        topology
            .models
            .iter()
            .find(|m| m.revision == revision)
            .map_or(md.spec.model.replicas, |m| m.replicas)
    };
    let worker_desired = |revision: &str| {
        topology
            .workers
            .iter()
            .find(|w| w.revision == revision)
            .map_or(md.spec.worker.replicas, |w| w.replicas)
    };
    let ready =
        |map: &BTreeMap<String, i32>, revision: &str| map.get(revision).copied().unwrap_or(0);

    let canary_model = canary
        .map(|c| c.model_revision.as_str())
        .filter(|r| *r != stable.model_revision);
    let canary_worker = canary
        .map(|c| c.worker_revision.as_str())
        .filter(|r| *r != stable.worker_revision);
    let tiers = TierStatuses {
        model: TierStatus {
            ready: topology
                .models
                .iter()
                .map(|m| ready(&readiness.models, &m.revision))
                .sum(),
            desired: topology.models.iter().map(|m| m.replicas).sum(),
            canary_ready: canary_model.map(|r| ready(&readiness.models, r)),
        },
        worker: TierStatus {
            ready: topology
                .workers
                .iter()
                .map(|w| ready(&readiness.workers, &w.revision))
                .sum(),
            desired: topology.workers.iter().map(|w| w.replicas).sum(),
            canary_ready: canary_worker.map(|r| ready(&readiness.workers, r)),
        },
    };

    let unavailable: Vec<String> = [
        (
            "model",
            &stable.model_revision,
            ready(&readiness.models, &stable.model_revision),
            model_desired(&stable.model_revision),
        ),
        (
            "worker",
            &stable.worker_revision,
            ready(&readiness.workers, &stable.worker_revision),
            worker_desired(&stable.worker_revision),
        ),
    ]
    .into_iter()
    .filter(|(_, _, ready, desired)| *desired > 0 && *ready == 0)
    .map(|(tier, revision, ready, desired)| {
        format!("{tier} tier unavailable: stable {revision} has {ready}/{desired} ready")
    })
    .collect();
    let available = unavailable.is_empty();
    let was = |type_: &str| {
        old.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    let degraded = !available && (was(AVAILABLE) || was(DEGRADED));
    let scaling =
        tiers.model.ready < tiers.model.desired || tiers.worker.ready < tiers.worker.desired;
    let progressing = canary.is_some() || scaling;

    let pair = |r: &mineru_crds::Revisions| format!("{}/{}", r.model_revision, r.worker_revision);
    let counts = |tier: &TierStatus| match tier.canary_ready {
        Some(canary_ready) => format!(
            "{}/{} ready (canary {canary_ready})",
            tier.ready, tier.desired
        ),
        None => format!("{}/{} ready", tier.ready, tier.desired),
    };
    let summary = format!(
        "model {}, worker {}",
        counts(&tiers.model),
        counts(&tiers.worker)
    );
    let message = if degraded {
        unavailable.join("; ")
    } else if let Some(canary) = canary {
        format!(
            "canary {} deployed beside stable {}: {summary}",
            pair(canary),
            pair(stable)
        )
    } else {
        format!("stable {}: {summary}", pair(stable))
    };
    let phase = if degraded {
        Phase::Degraded
    } else if progressing {
        Phase::Progressing
    } else {
        Phase::Healthy
    };

    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let last_transition_time = old
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };
    let ours = [
        if available {
            condition(
                AVAILABLE,
                true,
                "MinimumReplicasAvailable",
                format!("stable {} serves", pair(stable)),
            )
        } else {
            condition(AVAILABLE, false, "TierUnavailable", unavailable.join("; "))
        },
        if let Some(canary) = canary {
            condition(
                PROGRESSING,
                true,
                "CanaryDeployed",
                format!(
                    "canary {} runs beside stable {}",
                    pair(canary),
                    pair(stable)
                ),
            )
        } else if scaling {
            condition(PROGRESSING, true, "ReplicasNotReady", summary.clone())
        } else {
            condition(PROGRESSING, false, "Stable", summary.clone())
        },
        if degraded {
            condition(DEGRADED, true, "TierUnavailable", unavailable.join("; "))
        } else {
            condition(
                DEGRADED,
                false,
                "AsExpected",
                "no tier lost its ready replicas".to_owned(),
            )
        },
    ];
    // Conditions other components own (RolledBack, PreflightFailed) keep their place.
    let mut conditions: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| !ours.iter().any(|o| o.type_ == c.type_))
        .cloned()
        .collect();
    conditions.extend(ours);

    MineruDeploymentStatus {
        observed_generation: generation,
        phase: Some(phase),
        message: Some(message),
        stable: Some(stable.clone()),
        canary: canary.cloned(),
        tiers: Some(tiers),
        conditions,
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{Fixture, recorded};
    use crate::reconcile::{RecordedTemplates, SpecRevisions};
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn topology(md: &MineruDeployment) -> Topology {
        let spec = SpecRevisions::of("docs", &md.spec).unwrap();
        Topology::derive(md, &spec, &RecordedTemplates::default())
    }

    /// Every running revision with all its replicas ready.
    fn all_ready(topology: &Topology) -> ReadyReplicas {
        ReadyReplicas {
            models: topology
                .models
                .iter()
                .map(|m| (m.revision.clone(), m.replicas))
                .collect(),
            workers: topology
                .workers
                .iter()
                .map(|w| (w.revision.clone(), w.replicas))
                .collect(),
        }
    }

    fn condition<'a>(status: &'a MineruDeploymentStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    /// `md` after its status was written as `status`.
    fn with_status(mut md: MineruDeployment, status: MineruDeploymentStatus) -> MineruDeployment {
        md.status = Some(status);
        md
    }

    #[test]
    fn first_reconcile_is_progressing_not_degraded() {
        let md = MineruDeployment::test();
        let t = topology(&md);
        let status = desired(&md, &t, &ReadyReplicas::default(), &at(100));
        assert_eq!(status.phase, Some(Phase::Progressing));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.stable, Some(t.stable.clone()));
        assert_eq!(status.canary, None);
        assert_eq!(condition(&status, AVAILABLE).status, "False");
        assert_eq!(condition(&status, DEGRADED).status, "False");
        assert_eq!(condition(&status, PROGRESSING).reason, "ReplicasNotReady");
    }

    #[test]
    fn all_ready_without_canary_is_healthy() {
        let md = MineruDeployment::test();
        let t = topology(&md);
        let status = desired(&md, &t, &all_ready(&t), &at(100));
        assert_eq!(status.phase, Some(Phase::Healthy));
        assert_eq!(condition(&status, AVAILABLE).status, "True");
        assert_eq!(condition(&status, PROGRESSING).status, "False");
        let tiers = status.tiers.unwrap();
        assert_eq!((tiers.model.ready, tiers.model.desired), (1, 1));
        assert_eq!((tiers.worker.ready, tiers.worker.desired), (2, 2));
        assert!(status.message.unwrap().starts_with("stable m-"));
    }

    #[test]
    fn unchanged_readiness_keeps_the_status_identical() {
        let md = MineruDeployment::test();
        let t = topology(&md);
        let first = desired(&md, &t, &all_ready(&t), &at(100));
        let again = desired(
            &with_status(md, first.clone()),
            &t,
            &all_ready(&t),
            &at(999),
        );
        assert_eq!(again, first);
    }

    #[test]
    fn transition_time_moves_only_when_a_condition_flips() {
        let md = MineruDeployment::test();
        let t = topology(&md);
        let first = desired(&md, &t, &ReadyReplicas::default(), &at(100));
        let md = with_status(md, first);
        let second = desired(&md, &t, &all_ready(&t), &at(200));
        assert_eq!(condition(&second, AVAILABLE).last_transition_time, at(200));
        assert_eq!(
            condition(&second, DEGRADED).last_transition_time,
            at(100),
            "still False"
        );
    }

    #[test]
    fn losing_every_ready_replica_of_an_available_tier_is_degraded() {
        let md = MineruDeployment::test();
        let t = topology(&md);
        let healthy = desired(&md, &t, &all_ready(&t), &at(100));
        let mut readiness = all_ready(&t);
        readiness.models.values_mut().for_each(|ready| *ready = 0);
        let status = desired(&with_status(md, healthy), &t, &readiness, &at(200));
        assert_eq!(status.phase, Some(Phase::Degraded));
        assert_eq!(condition(&status, DEGRADED).status, "True");
        assert_eq!(condition(&status, AVAILABLE).reason, "TierUnavailable");
        assert!(
            status
                .message
                .unwrap()
                .starts_with("model tier unavailable")
        );
    }

    #[test]
    fn canary_beside_stable_is_progressing_with_canary_counts() {
        let base = MineruDeployment::test();
        let stable = SpecRevisions::of("docs", &base.spec).unwrap().revisions;
        let recorded = recorded(&base);
        let mut md = base.with_stable(stable.clone());
        md.spec.model.image = "vllm/vllm-openai:v0.11.1".into();
        let t = Topology::derive(
            &md,
            &SpecRevisions::of("docs", &md.spec).unwrap(),
            &recorded,
        );
        let mut readiness = ReadyReplicas::default();
        readiness.models.insert(stable.model_revision.clone(), 1);
        readiness.workers.insert(stable.worker_revision.clone(), 2);
        let status = desired(&md, &t, &readiness, &at(100));
        assert_eq!(status.phase, Some(Phase::Progressing));
        assert_eq!(status.stable, Some(stable));
        assert_eq!(status.canary, t.canary);
        assert_eq!(condition(&status, PROGRESSING).reason, "CanaryDeployed");
        let tiers = status.tiers.unwrap();
        assert_eq!(tiers.model.canary_ready, Some(0));
        assert_eq!(tiers.worker.canary_ready, Some(0));
        assert_eq!(tiers.worker.desired, 3);
    }

    #[test]
    fn fields_of_other_components_are_carried_over() {
        let mut md = MineruDeployment::test();
        md.status = Some(MineruDeploymentStatus {
            current_step: Some(1),
            canary_weight: Some(50),
            conditions: vec![Condition {
                type_: "RolledBack".into(),
                status: "False".into(),
                reason: "None".into(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: at(5),
            }],
            ..MineruDeploymentStatus::default()
        });
        let t = topology(&md);
        let status = desired(&md, &t, &ReadyReplicas::default(), &at(100));
        assert_eq!(status.current_step, Some(1));
        assert_eq!(status.canary_weight, Some(50));
        assert_eq!(condition(&status, "RolledBack").last_transition_time, at(5));
    }
}
