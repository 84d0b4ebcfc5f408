//! The fleet as a running node sees it: one router kept warm across the
//! node's delegations, and the peers' capabilities asked again in the
//! background, so that a peer that cannot be reached, or whose
//! capabilities no longer verify with its known key, is known (and cooled
//! down at once for the latter) before any task is sent to it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use sage_crypto::{Peer, Protocol, TrustStore};
use sage_route::{Outcome, Policy, Router};
use sage_store::Store;

use super::client::Client;
use super::delegation::{new_task_id, TaskSpec};
use super::recorded::{Attempt, AttemptError};
use super::route::{capabilities_of, CapabilitiesError};
use crate::keydir::Identity;
use crate::{ClientError, DelegateError};

/// A running node's router and what it knows of each peer.
#[derive(Debug)]
pub struct Fleet {
    router: Router<String>,
    /// LCT id → name, of the peers seen at the last refresh.
    names: Mutex<BTreeMap<String, String>>,
}

/// Spot checks of the peers ([`Fleet::refresh`]).
#[derive(Debug, Clone, Copy)]
pub struct Canary<'a> {
    /// Who signs the canary tasks.
    pub local: &'a Identity,
    /// The chance, per look at a peer, of a canary task (0 to 1).
    pub rate: f64,
}

/// One peer as [`Fleet::snapshot`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPeer {
    /// The peer's name.
    pub name: String,
    /// Delegations to it in flight.
    pub in_flight: u64,
    /// Its peak-EWMA time to proof.
    pub latency: Duration,
    /// How long until its cooldown ends, if it is cooling down.
    pub cooling_for: Option<Duration>,
    /// How often it was ejected.
    pub ejections: u32,
    /// Its reputation score, 0 to 1.
    pub score: f64,
}

impl Fleet {
    /// A fleet with `policy` and no history.
    pub fn new(policy: Policy) -> Fleet {
        Fleet {
            router: Router::new(policy),
            names: Mutex::new(BTreeMap::new()),
        }
    }

    /// The router, keyed by the peers' LCT ids.
    pub fn router(&self) -> &Router<String> {
        &self.router
    }

    /// Asks every peer of `trust` with an address (native protocol, not
    /// `local_lct`) for its capabilities, all at once, each within
    /// `within`, and keeps them in `store` until they expire. A peer whose
    /// capabilities do not verify is a trust failure for the router; one
    /// that does not answer, a transport failure.
    ///
    /// With a `canary`, each peer whose capabilities serve `echo` is, with
    /// the canary's chance, also sent an `echo` task with a random input
    /// (signed, recorded in the ledger like any delegation) whose proof
    /// must carry that input back: a wrong answer is the router's
    /// [`Outcome::WrongCanary`], a heavy loss of reputation and a cooldown.
    pub async fn refresh(
        &self,
        trust: &TrustStore,
        local_lct: &str,
        store: &Store,
        client_for: impl Fn(&Peer) -> Result<Client, ClientError>,
        within: Duration,
        canary: Option<Canary<'_>>,
    ) {
        let mut names = BTreeMap::new();
        let mut asks = tokio::task::JoinSet::new();
        for peer in trust.iter() {
            if peer.lct_id == local_lct || peer.protocol == Protocol::Legacy {
                continue;
            }
            let Some(_) = &peer.address else { continue };
            names.insert(peer.lct_id.clone(), peer.name.clone());
            let Ok(client) = client_for(peer) else {
                continue;
            };
            let (peer, store) = (peer.clone(), store.clone());
            asks.spawn(async move {
                let caps = capabilities_of(&client, &store, &peer, within, false).await;
                (peer, client, caps)
            });
        }
        *self.names.lock().unwrap_or_else(|e| e.into_inner()) = names;
        while let Some(asked) = asks.join_next().await {
            let Ok((peer, client, caps)) = asked else {
                continue;
            };
            let outcome = match caps {
                Ok(caps) => {
                    let serves_echo = caps.task_types.iter().any(|t| t.task_type == "echo");
                    match canary {
                        Some(canary) if serves_echo && rand::random::<f64>() < canary.rate => {
                            self.check(&client, store, &peer, canary.local, within)
                                .await;
                        }
                        _ => {}
                    }
                    continue;
                }
                Err(CapabilitiesError::Unreachable(why)) => {
                    tracing::debug!(peer = %peer.name, %why, "peer's capabilities not had");
                    Outcome::Transport
                }
                Err(CapabilitiesError::Untrusted(why)) => {
                    tracing::warn!(peer = %peer.name, %why, "a peer's capabilities do not verify: it is cooled down");
                    Outcome::TrustFailure
                }
            };
            self.router
                .observe_at(&peer.lct_id, tokio::time::Instant::now(), outcome);
        }
    }

    /// Sends `peer` a canary: an `echo` task with a random input, whose
    /// proof must carry it back.
    async fn check(
        &self,
        client: &Client,
        store: &Store,
        peer: &Peer,
        local: &Identity,
        within: Duration,
    ) {
        let mut text = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut text);
        let input = serde_json::json!({ "text": hex::encode(text) });
        let spec = TaskSpec {
            task_type: "echo".into(),
            input: input.clone(),
            estimated_cost: 0.0,
            quality: sage_types::QualityRequirements::default(),
            lifetime: within,
            max_latency: within,
            max_cost: None,
            task_id: Some(new_task_id(sage_types::clock::now_ms())),
            earlier_digests: Vec::new(),
            blobs: Vec::new(),
            origin: None,
        };
        let attempt = self.router.start(&peer.lct_id);
        let result = Attempt {
            client,
            store,
            local,
            target: peer,
            addr: peer.address.as_deref().unwrap_or_default(),
            protocol: Protocol::V1,
            spec: &spec,
            timeout: within,
            expect: Some(&input),
        }
        .run()
        .await;
        let outcome = match &result {
            Ok(d) => Outcome::Verified {
                measured: d.round_trip,
                claimed: None,
                terms_met: true,
            },
            Err(AttemptError::Sent(DelegateError::WrongAnswer { .. })) => {
                tracing::warn!(peer = %peer.name, "a peer signed a wrong answer to a canary task: it is cooled down");
                Outcome::WrongCanary
            }
            Err(e) => {
                tracing::debug!(peer = %peer.name, error = %e, "canary task not answered");
                Outcome::Transport
            }
        };
        attempt.finish(outcome);
    }

    /// Each peer seen at the last refresh, as the router sees it now.
    pub fn snapshot(&self) -> Vec<FleetPeer> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = tokio::time::Instant::now();
        let known: BTreeMap<String, sage_route::PeerSnapshot<String>> = self
            .router
            .snapshot()
            .into_iter()
            .map(|s| (s.key.clone(), s))
            .collect();
        names
            .into_iter()
            .map(|(lct, name)| match known.get(&lct) {
                Some(s) => FleetPeer {
                    name,
                    in_flight: s.in_flight,
                    latency: s.latency,
                    cooling_for: s
                        .cooling_until
                        .filter(|until| *until > now)
                        .map(|until| until - now),
                    ejections: s.ejections,
                    score: s.score,
                },
                // Nothing observed yet: the policy's priors.
                None => {
                    let policy = self.router.policy();
                    FleetPeer {
                        name,
                        in_flight: 0,
                        latency: policy.initial_latency,
                        cooling_for: None,
                        ejections: 0,
                        score: policy.prior_good / (policy.prior_good + policy.prior_bad),
                    }
                }
            })
            .collect()
    }
}
