//! PromQL templates: `{{namespace}}`, `{{name}}`, `{{revision}}`, `{{canaryRevision}}`,
//! `{{stableRevision}}`, `{{tier}}`, `{{interval}}`, `{{window}}`.
//!
//! An unknown placeholder is an error rather than left in place: Prometheus would accept the
//! literal text inside a label matcher and answer "no data" forever, which reads as
//! Inconclusive instead of as the typo it is.

use std::time::Duration;

use mineru_crds::Tier;
use thiserror::Error;

/// The values a template may use.
#[derive(Clone, Debug, PartialEq)]
pub struct Context<'a> {
    /// Namespace of the MineruDeployment.
    pub namespace: &'a str,
    /// Name of the MineruDeployment.
    pub name: &'a str,
    /// The revision judged (canary or stable) of the check's tier.
    pub revision: &'a str,
    /// The canary revision of the check's tier.
    pub canary_revision: &'a str,
    /// The stable revision of the check's tier.
    pub stable_revision: &'a str,
    /// The check's tier.
    pub tier: Tier,
    /// The analysis interval.
    pub interval: Duration,
    /// The evidence window: the time since the stage's traffic began (at least an interval).
    pub window: Duration,
}

/// Why a template could not be rendered.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `{{...}}` that names no known value.
    #[error(
        "unknown placeholder {{{{{0}}}}} in query template (known: namespace, name, revision, canaryRevision, stableRevision, tier, interval, window)"
    )]
    UnknownPlaceholder(String),
    /// A `{{` without its `}}`.
    #[error("unclosed placeholder in query template at byte {0}")]
    Unclosed(usize),
}

/// Renders `template` with `context`; whitespace inside the braces is allowed.
pub fn render(template: &str, context: &Context<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(template.len() - rest.len() + open))?;
        out.push_str(&value(after[..close].trim(), context)?);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn value(placeholder: &str, context: &Context<'_>) -> Result<String, TemplateError> {
    Ok(match placeholder {
        "namespace" => context.namespace.to_owned(),
        "name" => context.name.to_owned(),
        "revision" => context.revision.to_owned(),
        "canaryRevision" => context.canary_revision.to_owned(),
        "stableRevision" => context.stable_revision.to_owned(),
        "tier" => match context.tier {
            Tier::Model => "model".to_owned(),
            Tier::Worker => "worker".to_owned(),
        },
        "interval" => promql_duration(context.interval),
        "window" => promql_duration(context.window),
        other => return Err(TemplateError::UnknownPlaceholder(other.to_owned())),
    })
}

/// A duration PromQL accepts in a range selector: whole seconds, or milliseconds when finer
/// (`1.5m` as written in the spec is not valid PromQL).
pub fn promql_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}
