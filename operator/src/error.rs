//! The operator's error type; every variant says what to do about it and has a metric label.

/// Why a reconcile (or the operator process) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        /// What was attempted: `apply`, `delete`, `list`, `patch status`, `publish event`.
        action: &'static str,
        /// Kind of the object.
        kind: String,
        /// Name of the object, or the namespace for a list.
        name: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },

    /// The MineruDeployment CRD is not installed, so nothing can be watched.
    #[error(
        "the MineruDeployment CRD (minerudeployments.mineru.dev) is not installed: run `kubectl apply -f crds/minerudeployments.yaml` or install the Helm chart, then restart the operator"
    )]
    CrdMissing,

    /// The MineruDeployment cannot be turned into objects as written.
    #[error("invalid MineruDeployment {name}: {reason}")]
    InvalidSpec {
        /// `namespace/name` of the object.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// An object could not be serialized (a bug, never the user's input).
    #[error("serializing {what}: {source}")]
    Serialize {
        /// What was serialized.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// Traffic could not be routed (Gateway API mode): the HTTPRoute is missing, routes
    /// elsewhere, or could not be written.
    #[error("routing traffic: {0}")]
    Traffic(String),

    /// Leader election could not read or write its Lease.
    #[error("leader election on Lease {lease}: {source}")]
    Lease {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },

    /// A Lease call did not answer within its timeout: a hung call must not keep a leader alive.
    #[error("leader election on Lease {lease}: no answer within {timeout:?}")]
    LeaseUnanswered {
        /// `namespace/name` of the Lease.
        lease: String,
        /// How long the call was given.
        timeout: std::time::Duration,
    },

    /// This replica's leadership is not known to be current (renewal overdue), so it writes
    /// nothing until it is.
    #[error("not leading: the Lease was not renewed within the renew deadline")]
    NotLeading,

    /// Leadership was lost while reconciling; the process stops so that only one replica acts.
    #[error("lost leadership of Lease {lease} (now held by {holder})")]
    LeadershipLost {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The new holder, or `nobody`.
        holder: String,
    },
}

impl Error {
    /// A short, bounded label for `mineru_operator_reconcile_failures_total{error=...}`.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Kube { action, source, .. } => {
                let code = match source.as_ref() {
                    kube::Error::Api(status) => status.code.to_string(),
                    _ => "transport".to_owned(),
                };
                format!("{}_{code}", action.replace(' ', "_"))
            }
            Error::CrdMissing => "crd_missing".to_owned(),
            Error::InvalidSpec { .. } => "invalid_spec".to_owned(),
            Error::Serialize { .. } => "serialize".to_owned(),
            Error::Traffic(_) => "traffic".to_owned(),
            Error::Lease { .. } | Error::LeaseUnanswered { .. } => "lease".to_owned(),
            Error::NotLeading => "not_leading".to_owned(),
            Error::LeadershipLost { .. } => "leadership_lost".to_owned(),
        }
    }

    /// True for an optimistic-concurrency conflict (HTTP 409) that is worth retrying at once.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(status) if status.is_conflict()))
    }

    pub(crate) fn kube(
        action: &'static str,
        kind: impl Into<String>,
        name: impl Into<String>,
        source: kube::Error,
    ) -> Self {
        Error::Kube {
            action,
            kind: kind.into(),
            name: name.into(),
            source: Box::new(source),
        }
    }
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.to_owned(),
            ..kube::core::Status::failure("boom", reason)
        }))
    }

    #[test]
    fn api_failures_are_labelled_by_action_and_status_code() {
        let error = Error::kube(
            "patch status",
            "MineruDeployment",
            "docs",
            api_error(422, "Invalid"),
        );
        assert_eq!(error.metric_label(), "patch_status_422");
    }

    #[test]
    fn conflicts_are_recognised() {
        assert!(Error::kube("apply", "Service", "docs", api_error(409, "Conflict")).is_conflict());
        assert!(!Error::kube("apply", "Service", "docs", api_error(404, "NotFound")).is_conflict());
    }

    #[test]
    fn missing_crd_message_names_the_install_command() {
        let message = Error::CrdMissing.to_string();
        assert!(
            message.contains("kubectl apply -f crds/minerudeployments.yaml"),
            "{message}"
        );
        assert!(message.contains("Helm chart"), "{message}");
    }
}
