//! A small world for rollout engine tests: a spec, a cluster that does what the plan says when
//! asked, a Prometheus whose answers the test chooses, and a clock the test moves.
//!
//! Every decision's status goes through JSON before the next call, as it does through the API
//! server, so a test also proves that the engine's memory survives persistence.

#![allow(dead_code)] // each test binary uses a different part of the world

use std::time::Duration;

use mineru_crds::{
    CheckKind, MineruDeploymentStatus, Phase, QualityResult, Revisions, RolloutSpec, Verdict,
};
use mineru_operator::{
    gates::{
        Source,
        verdict::{Evaluation, Reading, Readings, evaluate},
    },
    rollout::{
        AnalysisRound, CheckResult, Command, Decision, EventReason, Input, Observed, Sizes,
        analysis_request, step,
    },
};
use serde_json::{Value, json};

pub const T0: &str = "2026-11-28T10:00:00Z";

/// The legacy Service of [`World::migrating`].
pub const LEGACY: &str = "mineru-legacy";

pub fn revisions(model: &str, worker: &str) -> Revisions {
    Revisions {
        model_revision: model.into(),
        worker_revision: worker.into(),
    }
}

/// The revisions running before the rollout.
pub fn old() -> Revisions {
    revisions("m-41aa", "w-88c2")
}

/// A model change: both tiers get a new revision.
pub fn new_model() -> Revisions {
    revisions("m-7f3c", "w-19ab")
}

/// A worker-only change: the model revision stays.
pub fn new_worker() -> Revisions {
    revisions("m-41aa", "w-5d10")
}

/// `spec.rollout` from JSON, with the CRD's defaults for everything left out.
pub fn rollout(extra: Value) -> RolloutSpec {
    let mut spec = json!({"analysis": {"prometheus": {"address": "http://prometheus:9090"}}});
    merge(&mut spec, extra);
    serde_json::from_value(spec).expect("a valid rollout spec")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

/// How Prometheus answers a check this round.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Pass,
    Fail,
    Inconclusive,
    Error,
}

pub struct World {
    pub input: Input,
    pub last: Option<Decision>,
    /// Everything emitted so far, for assertions on what happened once.
    pub events: Vec<(EventReason, String)>,
    /// After every decision, simulate a restart: decide again from the persisted status with
    /// the same facts, round and time, and require that nothing moves.
    pub verify_replay: bool,
    /// Decisions made so far.
    pub decisions: usize,
    /// The operator dies before writing status at this decision: it is computed and lost.
    pub crash_at: Option<usize>,
}

impl World {
    /// `old()` deployed and healthy, with the default rollout spec plus `extra`.
    pub fn new(extra: Value) -> World {
        let mut world = World::unstarted(rollout(extra));
        world.decide();
        world.converge();
        world.decide();
        assert_eq!(world.phase(), Phase::Healthy, "{}", world.message());
        world
    }

    /// A new object in Gateway API mode whose traffic a legacy Service (`mineru-legacy`)
    /// serves: `old()` is the canary of the migration, nothing decided yet.
    pub fn migrating(extra: Value) -> World {
        let mut spec = json!({"trafficRouting": {"gatewayAPI": {
            "httpRoute": {"name": "docs"},
            "legacyBackend": {"name": LEGACY, "port": 8000}
        }}});
        merge(&mut spec, extra);
        World::unstarted(rollout(spec))
    }

    /// `old()` desired, nothing decided yet.
    fn unstarted(rollout: RolloutSpec) -> World {
        World {
            input: Input {
                generation: Some(1),
                rollout,
                sizes: Sizes {
                    model_replicas: 2,
                    gpus_per_replica: 1,
                    worker_replicas: 4,
                },
                desired: old(),
                status: MineruDeploymentStatus::default(),
                observed: Observed::default(),
                analysis: None,
                commands: Vec::new(),
                now: T0.parse().unwrap(),
            },
            last: None,
            events: Vec::new(),
            verify_replay: false,
            decisions: 0,
            crash_at: None,
        }
    }

    /// Calls the engine and persists what it decided (through JSON, like the API server).
    pub fn decide(&mut self) -> &Decision {
        self.decisions += 1;
        if self.crash_at == Some(self.decisions) {
            step(&self.input);
            self.input.commands.clear();
            self.input.analysis = None;
            return self
                .last
                .as_ref()
                .expect("no crash before the first decision");
        }
        let decision = step(&self.input);
        assert_eq!(
            step(&self.input),
            decision,
            "the same input decides the same"
        );
        let json = serde_json::to_string(&decision.status).expect("status serializes");
        self.input.status = serde_json::from_str(&json).expect("status deserializes");
        self.input.commands.clear();
        if self.verify_replay {
            let replay = step(&self.input);
            assert_eq!(replay.status, self.input.status, "a replay changed status");
            assert_eq!(replay.plan, decision.plan, "a replay changed the plan");
            assert_eq!(replay.events, vec![], "a replay emitted events again");
            assert_eq!(replay.notifications, vec![], "a replay notified again");
        }
        self.input.analysis = None;
        self.events.extend(
            decision
                .events
                .iter()
                .map(|e| (e.reason, e.message.clone())),
        );
        self.last = Some(decision);
        self.last.as_ref().unwrap()
    }

    /// The cluster catches up with the last plan: every planned replica is ready and every
    /// model revision warmed up.
    pub fn converge(&mut self) {
        let plan = &self.last.as_ref().expect("a decision").plan;
        let observed = &mut self.input.observed;
        observed.model_ready = plan
            .model
            .iter()
            .map(|s| (s.revision.clone(), s.replicas))
            .collect();
        observed.worker_ready = plan
            .worker
            .iter()
            .map(|s| (s.revision.clone(), s.replicas))
            .collect();
        observed.warmed_up = plan.model.iter().map(|s| s.revision.clone()).collect();
        observed.unschedulable.clear();
    }

    pub fn ship(&mut self, desired: Revisions) {
        self.input.desired = desired;
        self.input.generation = self.input.generation.map(|g| g + 1);
    }

    pub fn command(&mut self, command: Command) {
        self.input.commands.push(command);
    }

    pub fn wait(&mut self, seconds: u64) {
        self.input.now = self
            .input
            .now
            .checked_add(Duration::from_secs(seconds))
            .unwrap();
    }

    /// A round where every requested check answers `default`, except those named in `overrides`.
    pub fn answer(&mut self, default: Answer, overrides: &[(&str, Answer)]) -> bool {
        let Some(request) = analysis_request(&self.input) else {
            return false;
        };
        let mut results = Vec::new();
        for check in &request.checks {
            let answer = overrides
                .iter()
                .find(|(name, _)| *name == check.name)
                .map_or(default.clone(), |(_, answer)| answer.clone());
            let revision = match check.tier {
                mineru_crds::Tier::Model => request.judged.model_revision.clone(),
                mineru_crds::Tier::Worker => request.judged.worker_revision.clone(),
            };
            results.push(CheckResult {
                name: check.name.clone(),
                kind: check.kind,
                revision,
                query: match &check.source {
                    Source::Query(query) => Some(query.clone()),
                    _ => None,
                },
                evaluation: reading(&answer, check.threshold.max.unwrap_or(1.0)),
            });
        }
        let quality = if request.quality.is_some() {
            let answer = overrides
                .iter()
                .find(|(name, _)| *name == "quality")
                .map_or(default, |(_, answer)| answer.clone());
            golden_documents(&answer)
        } else {
            Vec::new()
        };
        self.input.analysis = Some(AnalysisRound {
            at: self.input.now,
            results,
            quality,
        });
        true
    }

    /// Waits one analysis interval, answers every check with `answer` and decides.
    pub fn round(&mut self, answer: Answer) -> &Decision {
        self.wait(60);
        self.answer(answer, &[]);
        self.decide()
    }

    pub fn status(&self) -> &MineruDeploymentStatus {
        &self.input.status
    }

    pub fn phase(&self) -> Phase {
        self.input.status.phase.expect("phase always written")
    }

    pub fn message(&self) -> String {
        self.input.status.message.clone().unwrap_or_default()
    }

    pub fn step_index(&self) -> Option<i32> {
        self.input.status.current_step
    }

    pub fn weight(&self) -> i32 {
        self.last.as_ref().map_or(0, |d| d.plan.canary_weight)
    }

    pub fn replicas(&self, revision: &str) -> Option<i32> {
        let plan = &self.last.as_ref()?.plan;
        plan.model
            .iter()
            .chain(&plan.worker)
            .find(|s| s.revision == revision)
            .map(|s| s.replicas)
    }

    pub fn emitted(&self, reason: EventReason) -> usize {
        self.events.iter().filter(|(r, _)| *r == reason).count()
    }

    pub fn check(&self, name: &str, kind: CheckKind) -> Option<&mineru_crds::CheckStatus> {
        self.input
            .status
            .checks
            .iter()
            .find(|c| c.name == name && c.kind == kind)
    }

    /// Starts a rollout of `to` and brings the canary to step 1 (10%), ready and warmed up.
    pub fn at_first_step(extra: Value, to: Revisions) -> World {
        let mut world = World::new(extra);
        world.ship(to);
        world.decide();
        world.converge();
        world.decide();
        world.converge();
        world.decide();
        assert_eq!(world.step_index(), Some(0), "{}", world.message());
        assert_eq!(world.weight(), 10, "{}", world.message());
        world
    }

    /// Passes rounds until the step changes (at most `limit` rounds).
    pub fn pass_step(&mut self, limit: usize) {
        let before = self.step_index();
        for _ in 0..limit {
            self.round(Answer::Pass);
            self.converge();
            self.decide();
            if self.step_index() != before {
                return;
            }
        }
        panic!("step {before:?} never completed: {}", self.message());
    }
}

/// A golden-document comparison answering `answer`: 100 documents, 2 of them regressed for a
/// failure (beyond the default 1%, short of the 5% collapse); none compared when the
/// comparison could not run.
pub fn golden_documents(answer: &Answer) -> Vec<QualityResult> {
    let regressed = match answer {
        Answer::Pass => 0,
        Answer::Fail => 2,
        Answer::Inconclusive | Answer::Error => return Vec::new(),
    };
    (0..100)
        .map(|i| QualityResult {
            document: format!("golden-{i}.pdf"),
            similarity: if i < regressed { 0.5 } else { 0.99 },
            verdict: if i < regressed {
                Verdict::Fail
            } else {
                Verdict::Pass
            },
        })
        .collect()
}

/// An evaluation as the gates module would produce it for an answer.
pub fn reading(answer: &Answer, max: f64) -> Evaluation {
    let threshold = mineru_operator::gates::Threshold {
        max: Some(max),
        ..Default::default()
    };
    let value = match answer {
        Answer::Pass => Reading::Value(max),
        Answer::Fail => Reading::Value(max + 1.0),
        Answer::Inconclusive => Reading::Value(f64::NAN),
        Answer::Error => Reading::Error("connection refused".into()),
    };
    let evaluation = evaluate(
        &threshold,
        None,
        &Readings {
            value,
            stable: None,
            samples: None,
        },
    );
    let expected = match answer {
        Answer::Pass => Verdict::Pass,
        Answer::Fail => Verdict::Fail,
        Answer::Inconclusive => Verdict::Inconclusive,
        Answer::Error => Verdict::Error,
    };
    assert_eq!(evaluation.verdict, expected);
    evaluation
}
