//! Manual controls: `mineru.dev/*` annotations that people (or `kubectl mineru`, or an Argo CD
//! action) set and the operator consumes and removes. Spec is never edited, so GitOps stays in
//! charge of the desired state while people steer the rollout.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::rollout::Command;

/// `mineru.dev/promote: step|full` — leave the current step now, or promote at once.
pub const PROMOTE: &str = "mineru.dev/promote";
/// `mineru.dev/abort` — roll back now.
pub const ABORT: &str = "mineru.dev/abort";
/// `mineru.dev/retry` — roll out a failed revision again.
pub const RETRY: &str = "mineru.dev/retry";
/// `mineru.dev/pause` — stop advancing.
pub const PAUSE: &str = "mineru.dev/pause";
/// `mineru.dev/resume` — advance again.
pub const RESUME: &str = "mineru.dev/resume";

/// Every annotation this module consumes.
pub const ALL: [&str; 5] = [ABORT, RETRY, PAUSE, RESUME, PROMOTE];

/// What the annotations ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    /// Commands in the order the engine applies them: abort first, so a promote set at the same
    /// time finds nothing left to promote; pause before resume, so both together resume.
    pub commands: Vec<Command>,
    /// Annotations with a value that means nothing, with the reason; consumed all the same so
    /// they cannot linger.
    pub refused: Vec<String>,
    /// The annotation keys to remove.
    pub consumed: Vec<String>,
}

impl Requested {
    /// True when there is nothing to consume.
    pub fn is_empty(&self) -> bool {
        self.consumed.is_empty()
    }

    /// These commands once their annotations are gone: still to be acted on, nothing to remove.
    pub fn removed(mut self) -> Self {
        self.consumed.clear();
        self
    }

    /// These commands, then `later`'s.
    pub fn then(mut self, later: Requested) -> Self {
        self.commands.extend(later.commands);
        self.refused.extend(later.refused);
        self.consumed.extend(later.consumed);
        self
    }
}

/// Reads the manual-control annotations of an object.
pub fn read(annotations: &BTreeMap<String, String>) -> Requested {
    let mut requested = Requested::default();
    for key in ALL {
        let Some(value) = annotations.get(key) else {
            continue;
        };
        requested.consumed.push(key.to_owned());
        let command = match key {
            ABORT => Some(Command::Abort),
            RETRY => Some(Command::Retry),
            PAUSE => Some(Command::Pause),
            RESUME => Some(Command::Resume),
            _ => match value.trim() {
                "" | "step" => Some(Command::PromoteStep),
                "full" => Some(Command::PromoteFull),
                other => {
                    requested.refused.push(format!(
                        "{PROMOTE}: {other:?} is not a promotion; use \"step\" or \"full\""
                    ));
                    None
                }
            },
        };
        requested.commands.extend(command);
    }
    requested
}

/// A JSON merge patch removing the consumed annotations.
pub fn removal_patch(consumed: &[String]) -> Value {
    let annotations: Map<String, Value> = consumed
        .iter()
        .map(|key| (key.clone(), Value::Null))
        .collect();
    json!({"metadata": {"annotations": annotations}})
}

/// A JSON merge patch setting one command annotation, as `kubectl mineru` and Argo CD actions do.
pub fn request_patch(key: &str, value: &str) -> Value {
    json!({"metadata": {"annotations": {key: value}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_annotations_no_commands() {
        let requested = read(&annotations(&[("unrelated", "x")]));
        assert!(requested.is_empty());
        assert!(requested.commands.is_empty());
    }

    #[test]
    fn promote_values() {
        let cases = [
            ("step", Some(Command::PromoteStep)),
            ("", Some(Command::PromoteStep)),
            ("full", Some(Command::PromoteFull)),
            (" full ", Some(Command::PromoteFull)),
            ("everything", None),
        ];
        for (value, expected) in cases {
            let requested = read(&annotations(&[(PROMOTE, value)]));
            assert_eq!(requested.commands.first().copied(), expected, "{value:?}");
            assert_eq!(requested.consumed, [PROMOTE], "{value:?} must be consumed");
            assert_eq!(
                requested.refused.is_empty(),
                expected.is_some(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn abort_comes_before_promote_and_pause_before_resume() {
        let requested = read(&annotations(&[
            (PROMOTE, "full"),
            (RESUME, ""),
            (PAUSE, ""),
            (ABORT, "true"),
            (RETRY, ""),
        ]));
        assert_eq!(
            requested.commands,
            [
                Command::Abort,
                Command::Retry,
                Command::Pause,
                Command::Resume,
                Command::PromoteFull
            ]
        );
    }

    #[test]
    fn removed_commands_are_acted_on_before_later_ones_and_not_removed_again() {
        let earlier = read(&annotations(&[(ABORT, ""), (PROMOTE, "bogus")])).removed();
        let later = read(&annotations(&[(PAUSE, "")]));
        let both = earlier.then(later);
        assert_eq!(both.commands, [Command::Abort, Command::Pause]);
        assert_eq!(both.refused.len(), 1);
        assert_eq!(both.consumed, [PAUSE]);
    }

    #[test]
    fn removal_patch_nulls_each_consumed_key() {
        let patch = removal_patch(&[ABORT.to_owned(), PROMOTE.to_owned()]);
        assert_eq!(
            patch,
            json!({"metadata": {"annotations": {ABORT: null, PROMOTE: null}}})
        );
    }
}
