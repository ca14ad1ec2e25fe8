//! Leader election on a coordination.k8s.io Lease: of several replicas, one reconciles.
//!
//! The decision is pure ([`decide`], [`next_spec`]); [`Elector`] reads and writes the Lease
//! with optimistic concurrency (replace at the read resourceVersion), so two candidates racing
//! for an expired Lease cannot both win: the loser gets 409 and stays a follower.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{PostParams, ResourceExt},
};

use crate::error::{Error, Result};

/// What one election round does with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write the Lease, holding it.
    Claim(Claim),
    /// Someone else holds a live Lease.
    Follow {
        /// The holder's identity.
        holder: String,
    },
}

/// How the Lease is claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No Lease yet: create it.
    Create,
    /// Free or expired: take it over.
    Acquire,
    /// Ours: extend it.
    Renew,
}

/// Decides from the Lease's spec (`None`: no Lease object) at `now`.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Claim(Claim::Create);
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Claim(Claim::Renew);
    }
    let expires = spec.renew_time.as_ref().map(|renewed| {
        let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        renewed.0 + SignedDuration::from_secs(seconds)
    });
    match expires {
        Some(expires) if !holder.is_empty() && expires > now => Decision::Follow {
            holder: holder.to_owned(),
        },
        _ => Decision::Claim(Claim::Acquire),
    }
}

/// The Lease spec to write for `claim`.
pub fn next_spec(
    old: Option<&LeaseSpec>,
    claim: Claim,
    identity: &str,
    duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
    let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
    let taken = |lease_transitions| LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(lease_transitions),
        ..LeaseSpec::default()
    };
    match claim {
        Claim::Create => taken(0),
        Claim::Acquire => taken(transitions + 1),
        Claim::Renew => LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            ..old.cloned().unwrap_or_default()
        },
    }
}

/// One candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    /// Candidate `identity` for the Lease `namespace/name`, held for `duration` per renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One round at `now`: read, decide, write. Ok(holder): who holds the Lease afterwards.
    pub async fn round(&self, now: Timestamp) -> Result<String> {
        let lease = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?;
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        let claim = match decide(spec, &self.identity, now) {
            Decision::Claim(claim) => claim,
            Decision::Follow { holder } => return Ok(holder),
        };
        let next = next_spec(spec, claim, &self.identity, self.duration, now);
        let written = match lease {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(next),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(next);
                // resourceVersion stays the one read: a concurrent writer makes this a 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(self.identity.clone()),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
                Ok(String::from("another candidate"))
            }
            Err(error) => Err(self.error(error)),
        }
    }

    /// Gives the Lease up so a standby takes over at once instead of after it expires.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        self.api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Renews every `period` until `stop` resolves; fails with [`Error::LeadershipLost`] when the
    /// Lease went to someone else or could not be renewed before it expired.
    pub async fn keep(
        &self,
        period: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_renewal = tokio::time::Instant::now();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return Ok(()),
                _ = ticks.tick() => {}
            }
            match self.round(Timestamp::now()).await {
                Ok(holder) if holder == self.identity => last_renewal = tokio::time::Instant::now(),
                Ok(holder) => return Err(self.lost(holder)),
                Err(error) if last_renewal.elapsed() < self.duration => {
                    tracing::warn!(%error, "renewing the lease failed; retrying");
                }
                Err(_) => return Err(self.lost("nobody (renewal failed until expiry)".into())),
            }
        }
    }

    fn lost(&self, holder: String) -> Error {
        Error::LeadershipLost {
            lease: self.lease_name(),
            holder,
        }
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Lease {
            lease: self.lease_name(),
            source: Box::new(source),
        }
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.api.namespace().unwrap_or_default(), self.name)
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::reconcile::apiserver::ApiServer;

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/mineru-operator";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", at(100)), Decision::Claim(Claim::Create));
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(
            decide(Some(&held_by("a", 0)), "a", at(100)),
            Decision::Claim(Claim::Renew)
        );
    }

    #[test]
    fn a_live_lease_of_another_is_followed() {
        let decision = decide(Some(&held_by("b", 90)), "a", at(100));
        assert_eq!(decision, Decision::Follow { holder: "b".into() });
    }

    #[test]
    fn an_expired_lease_is_acquired() {
        assert_eq!(
            decide(Some(&held_by("b", 80)), "a", at(100)),
            Decision::Claim(Claim::Acquire)
        );
    }

    #[test]
    fn a_released_lease_is_acquired() {
        let mut released = held_by("b", 99);
        released.holder_identity = None;
        assert_eq!(
            decide(Some(&released), "a", at(100)),
            Decision::Claim(Claim::Acquire)
        );
    }

    #[test]
    fn acquiring_counts_a_transition_and_stamps_both_times() {
        let old = held_by("b", 80);
        let next = next_spec(
            Some(&old),
            Claim::Acquire,
            "a",
            Duration::from_secs(15),
            at(100),
        );
        assert_eq!(next.holder_identity.as_deref(), Some("a"));
        assert_eq!(next.lease_transitions, Some(3));
        assert_eq!(next.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(next.renew_time, Some(MicroTime(at(100))));
    }

    #[test]
    fn renewing_keeps_the_acquire_time() {
        let old = held_by("a", 80);
        let next = next_spec(
            Some(&old),
            Claim::Renew,
            "a",
            Duration::from_secs(15),
            at(100),
        );
        assert_eq!(next.acquire_time, Some(MicroTime(at(80))));
        assert_eq!(next.renew_time, Some(MicroTime(at(100))));
        assert_eq!(next.lease_transitions, Some(2));
    }

    #[test]
    fn creating_holds_the_lease_with_no_transition_yet() {
        let next = next_spec(None, Claim::Create, "a", Duration::from_secs(15), at(100));
        assert_eq!(next.holder_identity.as_deref(), Some("a"));
        assert_eq!(next.lease_duration_seconds, Some(15));
        assert_eq!(next.lease_transitions, Some(0));
    }

    fn lease_json(spec: &LeaseSpec) -> serde_json::Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "mineru-operator", "namespace": "ops", "resourceVersion": "7"},
            "spec": spec})
    }

    #[tokio::test]
    async fn a_missing_lease_is_created_by_the_first_candidate() {
        let server = ApiServer::default().failing_once(Method::GET, LEASE, 404);
        let (client, calls) = server.start();
        let elector = Elector::new(
            client,
            "ops",
            "mineru-operator",
            "a",
            Duration::from_secs(15),
        );
        assert_eq!(elector.round(at(100)).await.unwrap(), "a");
        drop(elector);
        let calls = calls.await.unwrap();
        let lines: Vec<_> = calls.iter().map(|c| c.line()).collect();
        assert_eq!(
            lines,
            [
                format!("GET {LEASE}"),
                "POST /apis/coordination.k8s.io/v1/namespaces/ops/leases".into()
            ]
        );
        assert_eq!(calls[1].body["spec"]["holderIdentity"], "a");
    }

    #[tokio::test]
    async fn a_live_lease_of_another_is_left_alone() {
        let server = ApiServer::default().with_object(LEASE, lease_json(&held_by("b", 95)));
        let (client, calls) = server.start();
        let elector = Elector::new(
            client,
            "ops",
            "mineru-operator",
            "a",
            Duration::from_secs(15),
        );
        assert_eq!(elector.round(at(100)).await.unwrap(), "b");
        drop(elector);
        assert!(calls.await.unwrap().iter().all(|c| !c.is_write()));
    }

    #[tokio::test]
    async fn losing_the_race_for_an_expired_lease_leaves_a_follower() {
        let server = ApiServer::default()
            .with_object(LEASE, lease_json(&held_by("b", 10)))
            .failing_once(Method::PUT, LEASE, 409);
        let (client, calls) = server.start();
        let elector = Elector::new(
            client,
            "ops",
            "mineru-operator",
            "a",
            Duration::from_secs(15),
        );
        assert_ne!(elector.round(at(100)).await.unwrap(), "a");
        drop(elector);
        let calls = calls.await.unwrap();
        assert_eq!(
            calls[1].body["metadata"]["resourceVersion"], "7",
            "replace is conditional on what was read"
        );
    }

    #[tokio::test]
    async fn release_clears_the_holder_only_when_it_is_us() {
        let server = ApiServer::default().with_object(LEASE, lease_json(&held_by("a", 95)));
        let (client, calls) = server.start();
        let elector = Elector::new(
            client,
            "ops",
            "mineru-operator",
            "a",
            Duration::from_secs(15),
        );
        elector.release().await.unwrap();
        drop(elector);
        let calls = calls.await.unwrap();
        assert_eq!(calls[1].method, Method::PUT);
        assert!(calls[1].body["spec"].get("holderIdentity").is_none());
    }
}
