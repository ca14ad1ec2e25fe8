//! API key rotation on the GPU tier. vLLM reads `VLLM_API_KEY` only when it starts, so a new
//! key in the Secret must restart vLLM — but not before the workers have the new key: the
//! kubelet refreshes their mounted file within a minute or two, and until then they send the
//! old key (with the new one as fallback the other way round, see the worker's client). So the
//! vLLM pod template carries a hash of the key, and a new hash is written only once it has been
//! seen for the propagation period. The StatefulSet then replaces its pods in place: the same
//! revision, no canary, no traffic moved.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use k8s_openapi::{api::apps::v1::StatefulSet, jiff::Timestamp};
use sha2::{Digest, Sha256};

/// Annotation of the vLLM pod template holding the hash of the key it starts with.
pub const KEY_VERSION: &str = "mineru.dev/api-key-version";

/// A short hash of `key`: it tells versions apart and says nothing of the key.
pub fn version_of(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The key version the vLLM pods run with now: the annotation of the observed StatefulSets'
/// templates (all carry the same), `None` before any was written.
pub fn observed_version(statefulsets: &[StatefulSet]) -> Option<String> {
    statefulsets.iter().find_map(|sts| {
        sts.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(KEY_VERSION)
            .cloned()
    })
}

/// What to write, and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The version the vLLM pod templates carry; `None`: no annotation (no key).
    pub version: Option<String>,
    /// When a version held back may be written.
    pub due_at: Option<Timestamp>,
}

/// Decides the version to write. `observed`: what the pods run with; `current`: the Secret's
/// key now; `first_seen`: since when `current` is known; `fresh`: no vLLM pods exist yet (they
/// start with whatever the Secret holds, so nothing needs to wait).
pub fn decide(
    observed: Option<&str>,
    current: Option<&str>,
    first_seen: Timestamp,
    now: Timestamp,
    propagation: Duration,
    fresh: bool,
) -> Rotation {
    let Some(current) = current else {
        return Rotation {
            version: observed.map(str::to_owned),
            due_at: None,
        };
    };
    let ready = first_seen
        .checked_add(k8s_openapi::jiff::SignedDuration::try_from(propagation).unwrap_or_default())
        .unwrap_or(first_seen);
    if fresh || observed == Some(current) || now >= ready {
        return Rotation {
            version: Some(current.to_owned()),
            due_at: None,
        };
    }
    Rotation {
        version: observed.map(str::to_owned),
        due_at: Some(ready),
    }
}

/// Since when each MineruDeployment's current key version is known, in this process. A
/// restarted operator waits the propagation period again: later, never too early.
#[derive(Debug, Default)]
pub struct FirstSeen(Mutex<HashMap<(String, String), (String, Timestamp)>>);

impl FirstSeen {
    /// When `version` of `namespace/name` was first seen, `now` if just now.
    pub fn since(&self, namespace: &str, name: &str, version: &str, now: Timestamp) -> Timestamp {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen
            .entry((namespace.to_owned(), name.to_owned()))
            .or_insert_with(|| (version.to_owned(), now));
        if entry.0 != version {
            *entry = (version.to_owned(), now);
        }
        entry.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    const WAIT: Duration = Duration::from_secs(180);

    #[test]
    fn a_new_key_reaches_the_pod_template_only_after_it_reached_the_workers() {
        let held = decide(Some("a"), Some("b"), at(1000), at(1100), WAIT, false);
        assert_eq!(
            held,
            Rotation {
                version: Some("a".into()),
                due_at: Some(at(1180))
            }
        );
        let due = decide(Some("a"), Some("b"), at(1000), at(1180), WAIT, false);
        assert_eq!(due.version.as_deref(), Some("b"));
        assert_eq!(due.due_at, None);
    }

    #[test]
    fn nothing_waits_without_a_change_or_without_pods() {
        let same = decide(Some("a"), Some("a"), at(1000), at(1000), WAIT, false);
        assert_eq!(same.version.as_deref(), Some("a"));
        let fresh = decide(None, Some("a"), at(1000), at(1000), WAIT, true);
        assert_eq!(fresh.version.as_deref(), Some("a"));
        let no_key = decide(None, None, at(1000), at(1000), WAIT, false);
        assert_eq!(
            no_key,
            Rotation {
                version: None,
                due_at: None
            }
        );
    }

    #[test]
    fn the_first_sighting_of_a_version_is_remembered_until_it_changes() {
        let seen = FirstSeen::default();
        assert_eq!(seen.since("ns", "docs", "a", at(10)), at(10));
        assert_eq!(seen.since("ns", "docs", "a", at(20)), at(10));
        assert_eq!(seen.since("ns", "docs", "b", at(30)), at(30));
        assert_eq!(seen.since("ns", "other", "b", at(40)), at(40));
    }

    #[test]
    fn a_version_is_a_short_hash_that_hides_the_key() {
        let version = version_of("s3cret");
        assert_eq!(version.len(), 12);
        assert_ne!(version, version_of("s3cret2"));
        assert!(!version.contains("s3cret"));
    }
}
