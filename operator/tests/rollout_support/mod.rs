//! A small world for rollout engine tests: a spec, a cluster that does what the plan says when
//! asked, a Prometheus whose answers the test chooses, and a clock the test moves.
//!
//! Every decision's status goes through JSON before the next call, as it does through the API
//! server, so a test also proves that the engine's memory survives persistence.

#![allow(dead_code)] // each test binary uses a different part of the world

use std::time::Duration;

use mineru_crds::{
    CheckKind, LegacyRole, MineruDeploymentStatus, Phase, QualityResult, Revisions, RolloutSpec,
    Verdict,
};
use mineru_operator::{
    evidence::Histogram,
    gates::{
        self, Source, Threshold,
        reading::{Measured, Reading},
    },
    rollout::{
        AnalysisRound, Command, Decision, EventReason, Input, Needs, Observed, ReadingRequest,
        ReadingResult, Role, Sizes, needs, step,
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
                    worker_concurrency: 4,
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

    /// What the engine asks for now.
    pub fn needs(&self) -> Needs {
        needs(&self.input)
    }

    /// A round where every requested check answers `default`, except those named in `overrides`.
    pub fn answer(&mut self, default: Answer, overrides: &[(&str, Answer)]) -> bool {
        let needs = self.needs();
        if needs.readings.is_empty() && needs.quality.is_none() {
            return false;
        }
        let answer_of = |name: &str| {
            overrides
                .iter()
                .find(|(check, _)| *check == name)
                .map_or(default.clone(), |(_, answer)| answer.clone())
        };
        let migrating = self.input.status.legacy == Some(LegacyRole::Serving);
        let rollout = &self.input.rollout;
        let checks = gates::checks(&rollout.analysis, &rollout.steps, migrating);
        let readings = needs
            .readings
            .iter()
            .map(|request| {
                let threshold = checks
                    .iter()
                    .find(|c| c.name == request.check && c.kind == request.kind)
                    .map(|c| c.threshold)
                    .expect("a reading for a known check");
                reading(request, &threshold, &answer_of(&request.check))
            })
            .collect();
        let quality = match needs.quality {
            Some(_) => golden_documents(&answer_of("quality")),
            None => Vec::new(),
        };
        self.input.analysis = Some(AnalysisRound {
            at: self.input.now,
            readings,
            quality,
            quality_documents: None,
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
            message: None,
            differences: Vec::new(),
        })
        .collect()
}

/// Raw readings that make a check with `request`'s source and threshold answer `answer`: a value
/// on the right side of the threshold (or NaN, or an error); counts and histograms whose
/// evidence is overwhelming either way (or empty).
pub fn reading(request: &ReadingRequest, threshold: &Threshold, answer: &Answer) -> ReadingResult {
    let baseline = request.role == Role::Baseline;
    let measured = match &request.source {
        Source::Value { samples, .. } => {
            let value = match (answer, baseline) {
                (Answer::Error, _) => Reading::Error("connection refused".into()),
                (Answer::Inconclusive, _) => Reading::Value(f64::NAN),
                (_, true) => Reading::Value(1.0),
                (Answer::Pass, false) => Reading::Value(passing_value(threshold)),
                (Answer::Fail, false) => Reading::Value(failing_value(threshold)),
            };
            let samples = samples.as_ref().map(|s| match answer {
                Answer::Error => Reading::Error("connection refused".into()),
                Answer::Inconclusive => Reading::Value(0.0),
                _ => Reading::Value((s.min * 10.0).max(1000.0)),
            });
            Measured::Value { value, samples }
        }
        Source::Proportion { .. } => {
            let total = 1e6;
            let count = |bad: f64, total: f64| (Reading::Value(bad), Reading::Value(total));
            let (bad, total) = match (answer, baseline) {
                (Answer::Error, _) => (
                    Reading::Error("connection refused".into()),
                    Reading::Error("connection refused".into()),
                ),
                (Answer::Inconclusive, _) => count(0.0, 0.0),
                (_, true) => count(total / 1000.0, total),
                // A `min` share holds when every document counts, a `max` one when none does.
                (Answer::Pass, false) if threshold.min.is_some() => count(total, total),
                (Answer::Pass, false) => count(0.0, total),
                (Answer::Fail, false) if threshold.min.is_some() => count(0.0, total),
                (Answer::Fail, false) => count(total, total),
            };
            Measured::Proportion { bad, total }
        }
        Source::Quantile { .. } => {
            let n = 1e6;
            let histogram = |buckets: &[(f64, f64)]| {
                let mut buckets = buckets.to_vec();
                buckets.push((f64::INFINITY, buckets.last().map_or(0.0, |b| b.1)));
                Reading::Buckets(Histogram::new(buckets).unwrap())
            };
            // Every document far below anything a threshold names, or far above it.
            let tiny = || histogram(&[(1e-12, n), (1e-9, n)]);
            let huge = || histogram(&[(1e9, 0.0), (1e12, n)]);
            let buckets = match (answer, baseline) {
                (Answer::Error, _) => Reading::Error("connection refused".into()),
                (Answer::Inconclusive, _) => Reading::Empty,
                (_, true) => histogram(&[(1e-12, 0.0), (1e-9, n)]),
                (Answer::Pass, false) if threshold.min.is_some() => huge(),
                (Answer::Pass, false) => tiny(),
                (Answer::Fail, false) if threshold.min.is_some() => tiny(),
                (Answer::Fail, false) => huge(),
            };
            Measured::Quantile { buckets }
        }
        Source::Distribution { .. } => {
            let mix = |text: f64, table: f64| {
                Reading::Counts(
                    [("text".to_owned(), text), ("table".to_owned(), table)]
                        .into_iter()
                        .collect(),
                )
            };
            // The baseline's mix, that mix again, or every table read as text, over 1e5
            // documents (none when inconclusive).
            let counts = match (answer, baseline) {
                (Answer::Error, _) => Reading::Error("connection refused".into()),
                (Answer::Inconclusive, _) => mix(0.0, 0.0),
                (_, true) | (Answer::Pass, false) => mix(8e5, 2e5),
                (Answer::Fail, false) => mix(1e6, 0.0),
            };
            let units = match answer {
                Answer::Error => Reading::Error("connection refused".into()),
                Answer::Inconclusive => Reading::Value(0.0),
                _ => Reading::Value(1e5),
            };
            Measured::Distribution { counts, units }
        }
        Source::CanaryVllmRestarts | Source::Quality => {
            panic!("{} is not read from Prometheus", request.check)
        }
    };
    ReadingResult {
        check: request.check.clone(),
        kind: request.kind,
        role: request.role,
        revision: request.revision.clone(),
        query: match &request.source {
            Source::Value { query, .. } => Some(query.clone()),
            Source::Proportion { bad, .. } => Some(bad.clone()),
            Source::Quantile { buckets, .. } => Some(buckets.clone()),
            Source::Distribution { counts, .. } => Some(counts.clone()),
            _ => None,
        },
        measured,
    }
}

fn passing_value(threshold: &Threshold) -> f64 {
    threshold.max.or(threshold.min).unwrap_or(1.0)
}

fn failing_value(threshold: &Threshold) -> f64 {
    match (threshold.max, threshold.min, threshold.max_ratio_to_stable) {
        (Some(max), _, _) => max + 1.0,
        (_, Some(min), _) => min - 1.0,
        (_, _, Some(ratio)) => ratio * threshold.ratio_floor.unwrap_or(1.0).max(1.0) * 10.0 + 1.0,
        _ => f64::NAN,
    }
}
