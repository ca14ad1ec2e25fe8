//! Golden-document rounds in the background. A round compares a step's golden documents on the
//! baseline and the canary workers — tens of documents, minutes each — so it runs as a task of
//! its own, a few documents at a time, while every reconcile goes on judging triggers, reading
//! commands and writing status; each reconcile collects what has finished so far, and the
//! engine streams it into `status.quality` (docs/adr/0009).
//!
//! Status is the memory here too: a round starts from the documents status already holds for
//! this canary, so an operator restart, a new leader or the next step's larger sample never
//! compares a finished document again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    background::{Task, lock},
    quality,
};
use futures::StreamExt;
use mineru_crds::QualityResult;

/// One round's documents and where they are parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The canary worker revision, which also fixes the documents' shuffle.
    pub canary_revision: String,
    /// Where the baseline and the canary parse.
    pub baseline: quality::Endpoint,
    pub canary_url: String,
    /// How many documents the step compares.
    pub documents: usize,
    /// Similarity at which a document matches.
    pub min_similarity: f64,
    /// Budget of one document on one worker.
    pub timeout: Duration,
    /// Documents compared at once.
    pub concurrency: usize,
}

/// What a round has found so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Every document compared for this canary, those done before the round included.
    pub results: Vec<QualityResult>,
    /// How many documents the round compares, once it has read them: fewer than asked when the
    /// golden set is smaller.
    pub documents: Option<usize>,
    /// Why the round stopped short (its documents could not be read); it is started again at
    /// the next poll.
    pub error: Option<String>,
}

/// The rounds running, one per MineruDeployment (`namespace/name`).
#[derive(Default)]
pub struct QualityRounds {
    rounds: Mutex<HashMap<String, Round>>,
}

impl std::fmt::Debug for QualityRounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let running = lock(&self.rounds).len();
        f.debug_struct("QualityRounds")
            .field("running", &running)
            .finish()
    }
}

struct Round {
    comparison: Comparison,
    found: Arc<Mutex<Vec<QualityResult>>>,
    sampled: Arc<Mutex<Option<usize>>>,
    outcome: Arc<Mutex<Option<Result<(), String>>>>,
    /// Dropping the round (replaced, cancelled) stops it.
    _task: Task,
}

impl QualityRounds {
    /// The progress of `object`'s round for `comparison`: the documents `done` before (as
    /// status holds them) and what the round has found since. Starts the round when none runs
    /// for this comparison — replacing one for another canary or step — reading its documents
    /// from `golden` and skipping those done; starts it again when it could not read them.
    pub fn poll<G>(
        &self,
        object: &str,
        comparison: Comparison,
        done: &[QualityResult],
        http: &reqwest::Client,
        golden: G,
    ) -> Progress
    where
        G: Future<Output = Result<BTreeMap<String, Vec<u8>>, String>> + Send + 'static,
    {
        let mut rounds = lock(&self.rounds);
        let current = rounds
            .get(object)
            .filter(|round| round.comparison == comparison);
        let failed = current.and_then(|round| match &*lock(&round.outcome) {
            Some(Err(error)) => Some(error.clone()),
            _ => None,
        });
        let progress = Progress {
            results: merged(done, current.map(|r| lock(&r.found).clone())),
            documents: current.and_then(|r| *lock(&r.sampled)),
            error: failed.clone(),
        };
        if current.is_some() && failed.is_none() {
            return progress;
        }
        let skip: BTreeSet<String> = progress
            .results
            .iter()
            .map(|r| r.document.clone())
            .collect();
        let found = Arc::new(Mutex::new(Vec::new()));
        let sampled = Arc::new(Mutex::new(None));
        let outcome = Arc::new(Mutex::new(None));
        let task = Task::spawn(run(
            comparison.clone(),
            http.clone(),
            golden,
            skip,
            Sinks {
                found: found.clone(),
                sampled: sampled.clone(),
                outcome: outcome.clone(),
            },
        ));
        // Replacing a round aborts the old one (its Task's Drop).
        rounds.insert(
            object.to_owned(),
            Round {
                comparison,
                found,
                sampled,
                outcome,
                _task: task,
            },
        );
        progress
    }

    /// Stops `object`'s round, if one runs: its rollout no longer compares documents.
    pub fn cancel(&self, object: &str) {
        lock(&self.rounds).remove(object);
    }
}

/// `done`, with the round's findings added (a document found again replaces its old result).
fn merged(done: &[QualityResult], found: Option<Vec<QualityResult>>) -> Vec<QualityResult> {
    let mut by_document: BTreeMap<String, QualityResult> = done
        .iter()
        .map(|r| (r.document.clone(), r.clone()))
        .collect();
    for result in found.into_iter().flatten() {
        by_document.insert(result.document.clone(), result);
    }
    by_document.into_values().collect()
}

/// Where a running round leaves what it finds.
struct Sinks {
    found: Arc<Mutex<Vec<QualityResult>>>,
    sampled: Arc<Mutex<Option<usize>>>,
    outcome: Arc<Mutex<Option<Result<(), String>>>>,
}

async fn run<G>(
    comparison: Comparison,
    http: reqwest::Client,
    golden: G,
    skip: BTreeSet<String>,
    sinks: Sinks,
) where
    G: Future<Output = Result<BTreeMap<String, Vec<u8>>, String>>,
{
    let documents = match golden.await {
        Ok(documents) => documents,
        Err(error) => {
            tracing::warn!(%error, "golden documents could not be read");
            *lock(&sinks.outcome) = Some(Err(error));
            return;
        }
    };
    let sample = quality::sample(documents, &comparison.canary_revision, comparison.documents);
    *lock(&sinks.sampled) = Some(sample.len());
    let found = &sinks.found;
    let pending = sample.into_iter().filter(|(name, _)| !skip.contains(name));
    futures::stream::iter(pending)
        .for_each_concurrent(comparison.concurrency.max(1), |(name, pdf)| {
            let (http, comparison) = (&http, &comparison);
            async move {
                let result = quality::compare_one(
                    http,
                    &comparison.baseline,
                    &quality::Endpoint::worker(comparison.canary_url.clone()),
                    &name,
                    &pdf,
                    comparison.min_similarity,
                    comparison.timeout,
                )
                .await;
                lock(found).push(result);
            }
        })
        .await;
    *lock(&sinks.outcome) = Some(Ok(()));
}
