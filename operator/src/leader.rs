//! Leader election on a coordination.k8s.io Lease: of several replicas, one reconciles.
//!
//! The decision is pure ([`decide`], [`next_spec`]); [`Elector`] reads and writes the Lease
//! with optimistic concurrency (replace at the read resourceVersion), so two candidates racing
//! for an expired Lease cannot both win: the loser gets 409 and stays a follower.
//!
//! Every duration is measured on this replica's monotonic clock from what it observed, never by
//! comparing the holder's `renewTime` with the local wall clock (clocks of two nodes differ): a
//! follower takes over once the Lease record has not changed for a whole lease duration, and a
//! leader stops writing ([`Leadership::holds`]) once a renew deadline, shorter than the lease,
//! has passed since the start of its last successful renewal. Each Lease call has a timeout, so
//! a hung call cannot keep a zombie leader writing.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
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

/// Decides from the Lease's spec (`None`: no Lease object), `unchanged_for` being how long this
/// candidate has seen the very same record: the holder is alive while it keeps renewing.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, unchanged_for: Duration) -> Decision {
    let Some(spec) = lease else {
        return Decision::Claim(Claim::Create);
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Claim(Claim::Renew);
    }
    let lease =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    if !holder.is_empty() && unchanged_for < lease {
        Decision::Follow {
            holder: holder.to_owned(),
        }
    } else {
        Decision::Claim(Claim::Acquire)
    }
}

/// The renew deadline for a lease of `lease`: two thirds of it, so a leader that cannot renew
/// stops writing a third of a lease before any follower may take over.
pub fn renew_deadline(lease: Duration) -> Duration {
    lease * 2 / 3
}

/// Whether this replica may write, shared by the elector and the controller.
#[derive(Debug)]
pub struct Leadership {
    /// `None`: no election (a single replica); always held.
    deadline: Option<Duration>,
    renewal_started: Mutex<Option<Instant>>,
}

impl Leadership {
    /// No election: this replica always leads.
    pub fn unconditional() -> Self {
        Leadership {
            deadline: None,
            renewal_started: Mutex::new(None),
        }
    }

    /// Held for `deadline` after the start of each successful renewal; not held yet.
    pub fn elected(deadline: Duration) -> Self {
        Leadership {
            deadline: Some(deadline),
            renewal_started: Mutex::new(None),
        }
    }

    /// A renewal that was sent at `started` succeeded. The start, not the answer, counts: the
    /// Lease may have been written as soon as the call left.
    pub fn renewed(&self, started: Instant) {
        *self
            .renewal_started
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(started);
    }

    /// True while the last successful renewal started less than the renew deadline ago.
    pub fn holds(&self) -> bool {
        let Some(deadline) = self.deadline else {
            return true;
        };
        let started = *self
            .renewal_started
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        started.is_some_and(|started| started.elapsed() < deadline)
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
    /// The Lease record last read and when it was first seen so, on the monotonic clock.
    observed: Mutex<Option<(LeaseSpec, Instant)>>,
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
            observed: Mutex::new(None),
        }
    }

    /// The lease duration this candidate writes.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Longest a Lease call may take: a third of the renew deadline, so a hung call still leaves
    /// time for another attempt before leadership lapses.
    pub fn call_timeout(&self) -> Duration {
        renew_deadline(self.duration) / 3
    }

    /// How long `spec` has been the record this candidate sees.
    fn unchanged_for(&self, spec: Option<&LeaseSpec>) -> Duration {
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        match (&*observed, spec) {
            (Some((seen, since)), Some(spec)) if seen == spec => since.elapsed(),
            (_, Some(spec)) => {
                *observed = Some((spec.clone(), Instant::now()));
                Duration::ZERO
            }
            (_, None) => {
                *observed = None;
                Duration::ZERO
            }
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One round, each call under [`Elector::call_timeout`]: read, decide, write; `now` is the
    /// renewTime written (for others to see a change, never compared). Ok(holder): who holds
    /// the Lease afterwards.
    pub async fn round(&self, now: Timestamp) -> Result<String> {
        let lease = self
            .answered(self.api.get_opt(&self.name))
            .await?
            .map_err(|e| self.error(e))?;
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        let claim = match decide(spec, &self.identity, self.unchanged_for(spec)) {
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
                self.answered(self.api.create(&PostParams::default(), &lease))
                    .await?
            }
            Some(mut lease) => {
                lease.spec = Some(next);
                // resourceVersion stays the one read: a concurrent writer makes this a 409.
                self.answered(self.api.replace(&self.name, &PostParams::default(), &lease))
                    .await?
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

    /// `call`'s answer, or [`Error::LeaseUnanswered`] after [`Elector::call_timeout`].
    async fn answered<T>(&self, call: impl std::future::Future<Output = T>) -> Result<T> {
        tokio::time::timeout(self.call_timeout(), call)
            .await
            .map_err(|_| Error::LeaseUnanswered {
                lease: self.lease_name(),
                timeout: self.call_timeout(),
            })
    }

    /// Gives the Lease up so a standby takes over at once instead of after it expires.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .answered(self.api.get_opt(&self.name))
            .await?
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
        self.answered(
            self.api
                .replace(&lease.name_any(), &PostParams::default(), &lease),
        )
        .await?
        .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Rounds every `period` until this candidate holds the Lease (true, `leadership` renewed)
    /// or `stop` resolves (false).
    pub async fn acquire(
        &self,
        leadership: &Leadership,
        period: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> bool {
        let mut ticks = tokio::time::interval(period);
        tokio::pin!(stop);
        let mut follows = String::new();
        loop {
            tokio::select! {
                () = &mut stop => return false,
                _ = ticks.tick() => {}
            }
            let started = Instant::now();
            match self.round(Timestamp::now()).await {
                Ok(holder) if holder == self.identity => {
                    leadership.renewed(started);
                    return true;
                }
                Ok(holder) if holder != follows => {
                    tracing::info!(leader = %holder, "standing by");
                    follows = holder;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "leader election round failed"),
            }
        }
    }

    /// Renews every `period` until `stop` resolves; fails with [`Error::LeadershipLost`] when the
    /// Lease went to someone else or was not renewed within the renew deadline — also when this
    /// process was frozen past it, which is noticed before any renewal is tried.
    pub async fn keep(
        &self,
        leadership: &Leadership,
        period: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return Ok(()),
                _ = ticks.tick() => {}
            }
            if !leadership.holds() {
                return Err(self.lost("nobody (not renewed within the renew deadline)".into()));
            }
            let started = Instant::now();
            match self.round(Timestamp::now()).await {
                Ok(holder) if holder == self.identity => leadership.renewed(started),
                Ok(holder) => return Err(self.lost(holder)),
                Err(error) => tracing::warn!(%error, "renewing the lease failed; retrying"),
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
    use tokio::task::JoinHandle;

    use crate::reconcile::apiserver::{ApiServer, Call};

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

    const LEASE_LIFE: Duration = Duration::from_secs(15);

    #[test]
    fn no_lease_is_created() {
        assert_eq!(
            decide(None, "a", Duration::ZERO),
            Decision::Claim(Claim::Create)
        );
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(
            decide(Some(&held_by("a", 0)), "a", LEASE_LIFE * 10),
            Decision::Claim(Claim::Renew)
        );
    }

    #[test]
    fn a_lease_of_another_is_followed_until_it_went_unchanged_for_its_duration() {
        let lease = held_by("b", 90);
        let follow = Decision::Follow { holder: "b".into() };
        assert_eq!(
            decide(Some(&lease), "a", LEASE_LIFE - Duration::from_millis(1)),
            follow
        );
        assert_eq!(
            decide(Some(&lease), "a", LEASE_LIFE),
            Decision::Claim(Claim::Acquire)
        );
    }

    #[test]
    fn the_holders_renew_time_is_never_compared_with_the_local_clock() {
        // Renewed at second 0 by the holder's clock: a newly seen record is live all the same.
        let decision = decide(Some(&held_by("b", 0)), "a", Duration::ZERO);
        assert_eq!(decision, Decision::Follow { holder: "b".into() });
    }

    #[test]
    fn a_released_lease_is_acquired() {
        let mut released = held_by("b", 99);
        released.holder_identity = None;
        assert_eq!(
            decide(Some(&released), "a", Duration::ZERO),
            Decision::Claim(Claim::Acquire)
        );
    }

    #[test]
    fn the_renew_deadline_is_shorter_than_the_lease() {
        assert_eq!(renew_deadline(LEASE_LIFE), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_lapses_at_the_renew_deadline_after_the_renewal_started() {
        let leadership = Leadership::elected(Duration::from_secs(10));
        assert!(!leadership.holds(), "not held before the first renewal");
        leadership.renewed(Instant::now());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(leadership.holds());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!leadership.holds());
        assert!(Leadership::unconditional().holds());
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
        let elector = elector(client);
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
        let elector = elector(client);
        assert_eq!(elector.round(at(100)).await.unwrap(), "b");
        drop(elector);
        assert!(calls.await.unwrap().iter().all(|c| !c.is_write()));
    }

    fn elector(client: Client) -> Elector {
        Elector::new(client, "ops", "mineru-operator", "a", LEASE_LIFE)
    }

    #[tokio::test(start_paused = true)]
    async fn losing_the_race_for_an_expired_lease_leaves_a_follower() {
        let server = ApiServer::default()
            .with_object(LEASE, lease_json(&held_by("b", 10)))
            .failing_once(Method::PUT, LEASE, 409);
        let (client, calls) = server.start();
        let elector = elector(client);
        assert_eq!(elector.round(at(100)).await.unwrap(), "b", "newly seen");
        tokio::time::advance(LEASE_LIFE).await;
        assert_ne!(elector.round(at(115)).await.unwrap(), "a");
        drop(elector);
        let calls = calls.await.unwrap();
        let lines: Vec<_> = calls.iter().map(|c| c.line()).collect();
        assert_eq!(
            lines,
            [
                format!("GET {LEASE}"),
                format!("GET {LEASE}"),
                format!("PUT {LEASE}")
            ]
        );
        assert_eq!(
            calls[2].body["metadata"]["resourceVersion"], "7",
            "replace is conditional on what was read"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_call_that_never_answers_times_out() {
        let (service, _never_answered) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let elector = elector(Client::new(service, "default"));
        let error = elector.round(at(100)).await.unwrap_err();
        assert!(
            matches!(error, Error::LeaseUnanswered { timeout, .. } if timeout < renew_deadline(LEASE_LIFE)),
            "{error}"
        );
    }

    /// Candidate `a`, holding the Lease it just renewed; the server's recorded calls.
    fn leading() -> (Elector, Leadership, JoinHandle<Vec<Call>>) {
        let (client, calls) = ApiServer::default()
            .with_object(LEASE, lease_json(&held_by("a", 95)))
            .start();
        let leadership = Leadership::elected(renew_deadline(LEASE_LIFE));
        leadership.renewed(Instant::now());
        (elector(client), leadership, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_frozen_past_its_renew_deadline_gives_up_before_writing() {
        let (elector, leadership, calls) = leading();
        // As if SIGSTOPped: the monotonic clock ran on while nothing did.
        tokio::time::advance(renew_deadline(LEASE_LIFE)).await;
        let kept = elector
            .keep(&leadership, Duration::from_secs(2), std::future::pending())
            .await;
        assert!(
            matches!(kept, Err(Error::LeadershipLost { .. })),
            "{kept:?}"
        );
        drop(elector);
        assert!(calls.await.unwrap().is_empty(), "no Lease call once lapsed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_keeps_renewing_while_its_renewals_succeed() {
        let (elector, leadership, calls) = leading();
        let kept = elector
            .keep(
                &leadership,
                Duration::from_secs(2),
                tokio::time::sleep(Duration::from_secs(30)),
            )
            .await;
        assert!(kept.is_ok(), "{kept:?}");
        assert!(leadership.holds());
        drop(elector);
        let renewals = calls
            .await
            .unwrap()
            .iter()
            .filter(|c| c.method == Method::PUT)
            .count();
        assert!(renewals >= 14, "every 2 s for 30 s: {renewals}");
    }

    #[tokio::test]
    async fn release_clears_the_holder_only_when_it_is_us() {
        let server = ApiServer::default().with_object(LEASE, lease_json(&held_by("a", 95)));
        let (client, calls) = server.start();
        let elector = elector(client);
        elector.release().await.unwrap();
        drop(elector);
        let calls = calls.await.unwrap();
        assert_eq!(calls[1].method, Method::PUT);
        assert!(calls[1].body["spec"].get("holderIdentity").is_none());
    }
}
