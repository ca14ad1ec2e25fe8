//! One round of analysis against Prometheus: render each requested check's queries for the
//! judged and baseline revisions, run them concurrently, and judge the readings.

use std::time::Duration;

use futures::future::join_all;
use mineru_crds::Verdict;

use super::{
    Check, Source,
    prometheus::PrometheusSource,
    template::{self, Context},
    verdict::{Evaluation, Reading, Readings, evaluate},
};
use crate::rollout::{AnalysisRequest, CheckResult};

/// The object whose checks run, for `{{namespace}}`, `{{name}}` and `{{interval}}`.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub interval: Duration,
}

/// Runs every Prometheus check of `request`; checks answered elsewhere (quality, pod status)
/// are skipped.
pub async fn run(
    request: &AnalysisRequest,
    subject: Subject<'_>,
    source: &PrometheusSource,
) -> Vec<CheckResult> {
    let queries = request
        .checks
        .iter()
        .filter_map(|check| match &check.source {
            Source::Query(template) => Some(run_check(check, template, request, subject, source)),
            Source::CanaryVllmRestarts | Source::Quality => None,
        });
    join_all(queries).await
}

async fn run_check(
    check: &Check,
    template: &str,
    request: &AnalysisRequest,
    subject: Subject<'_>,
    source: &PrometheusSource,
) -> CheckResult {
    let judged = request.judged.of(check.tier);
    let baseline = request
        .baseline
        .as_ref()
        .map(|baseline| baseline.revision(check.tier));
    let judged_context = Context {
        namespace: subject.namespace,
        name: subject.name,
        revision: judged,
        canary_revision: judged,
        stable_revision: baseline.unwrap_or(judged),
        tier: check.tier,
        interval: subject.interval,
    };
    let result = |query: Option<String>, evaluation: Evaluation| CheckResult {
        name: check.name.clone(),
        kind: check.kind,
        revision: judged.to_owned(),
        query,
        evaluation,
    };

    let value_query = match template::render(template, &judged_context) {
        Ok(query) => query,
        Err(error) => return result(None, error_evaluation(error.to_string())),
    };
    let stable_query = match baseline.filter(|_| check.threshold.compares_with_stable()) {
        Some(stable) => {
            let stable_context = Context {
                revision: stable,
                ..judged_context.clone()
            };
            match template::render(template, &stable_context) {
                Ok(query) => Some(query),
                Err(error) => {
                    return result(Some(value_query), error_evaluation(error.to_string()));
                }
            }
        }
        None => None,
    };
    let samples_query = match &check.samples {
        Some(samples) => match template::render(&samples.query, &judged_context) {
            Ok(query) => Some(query),
            Err(error) => return result(Some(value_query), error_evaluation(error.to_string())),
        },
        None => None,
    };

    let (value, stable, samples) = futures::join!(
        source.read(&value_query),
        read_optional(source, stable_query.as_deref()),
        read_optional(source, samples_query.as_deref()),
    );
    let readings = Readings {
        value,
        stable,
        samples,
    };
    let min_samples = check.samples.as_ref().map(|samples| samples.min);
    result(
        Some(value_query),
        evaluate(&check.threshold, min_samples, &readings),
    )
}

async fn read_optional(source: &PrometheusSource, query: Option<&str>) -> Option<Reading> {
    match query {
        Some(query) => Some(source.read(query).await),
        None => None,
    }
}

fn error_evaluation(message: String) -> Evaluation {
    Evaluation {
        verdict: Verdict::Error,
        value: None,
        stable_value: None,
        samples: None,
        message: Some(message),
    }
}
