//! The state every handler shares.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use sage_crypto::{KeyId, NodeKey, Peer, PeerSource, TrustStore};
use sage_types::capabilities::Hardware;

use crate::config::Limits;
use sage_exec::ExecutorSet;
use sage_store::Store;

use super::blob_store::BlobStore;
use super::metrics::{Metrics, RouteGauge, RouteView};
use super::problem::ApiError;
use super::rate::PeerRate;
use super::refusals::RefusalLog;
use super::running::Running;

/// What a node is made of.
#[derive(Debug)]
pub struct NodeSetup {
    /// Platform name.
    pub name: String,
    /// LCT id; tasks must name it as their audience.
    pub lct_id: String,
    /// The key that signs proofs.
    pub key: Arc<NodeKey>,
    /// The peers whose tasks are accepted.
    pub trust: TrustStore,
    /// The executors by task type.
    pub executors: ExecutorSet,
    /// Limits on what is accepted.
    pub limits: Limits,
    /// The machine, for the capabilities document.
    pub hardware: Hardware,
    /// Durable state: accepted tasks, their proofs, seen nonces.
    pub store: Store,
}

/// What a reload (SIGHUP) replaces: who is trusted, what runs, and the
/// limits. Handlers take one snapshot per request, so a request finishes
/// under the policy it started with, and the next one sees the new one.
#[derive(Debug)]
pub struct Policy {
    /// The peers whose tasks are accepted.
    pub trust: TrustStore,
    /// The executors by task type.
    pub executors: ExecutorSet,
    /// Limits on what is accepted.
    pub limits: Limits,
}

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) name: String,
    pub(super) lct_id: String,
    pub(super) key: Arc<NodeKey>,
    pub(super) hardware: Hardware,
    pub(super) key_id: KeyId,
    pub(super) public_hex: String,
    /// This node as a signer of tasks: a task signed with its own key comes
    /// from the holder of that key, the node's own delegations (a fleet
    /// that routes to its local node).
    pub(super) own: Peer,
    pub(super) store: Store,
    pub(super) started: Instant,
    pub(super) metrics: Metrics,
    pub(super) peer_rate: PeerRate,
    pub(super) refusals: RefusalLog,
    /// The tasks running now, owned by the node.
    pub(super) running: Running,
    policy: RwLock<Arc<Policy>>,
    requests: AtomicUsize,
    /// What a router knows of the peers, for `/metrics`; set by
    /// the program that routes ([`AppState::set_route_view`]).
    route_view: std::sync::OnceLock<Viewer>,
    /// Where uploaded blobs are kept; set by the program that serves
    /// ([`AppState::set_blobs`]). Without it, uploads and tasks that name
    /// blobs are refused.
    blobs: std::sync::OnceLock<BlobStore>,
}

/// A [`RouteView`], which has no `Debug` of its own.
struct Viewer(RouteView);

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteView")
    }
}

impl Inner {
    /// The blob store, or the refusal of a node that keeps none.
    pub(super) fn blobs(&self) -> Result<&BlobStore, ApiError> {
        self.blobs.get().ok_or_else(|| {
            ApiError::new(
                sage_types::ProblemCode::NotFound,
                "this node keeps no blobs",
            )
        })
    }
}

impl AppState {
    /// The state of a node made of `setup`.
    pub fn new(setup: NodeSetup) -> Self {
        let public = setup.key.public();
        let mut own = Peer::new(&setup.name, public, PeerSource::Given);
        own.lct_id = setup.lct_id.clone();
        AppState {
            inner: Arc::new(Inner {
                name: setup.name,
                lct_id: setup.lct_id,
                key: setup.key,
                hardware: setup.hardware,
                key_id: public.key_id(),
                public_hex: public.to_hex(),
                own,
                store: setup.store,
                started: Instant::now(),
                metrics: Metrics::default(),
                peer_rate: PeerRate::default(),
                refusals: RefusalLog::default(),
                policy: RwLock::new(Arc::new(Policy {
                    trust: setup.trust,
                    executors: setup.executors,
                    limits: setup.limits,
                })),
                running: Running::default(),
                requests: AtomicUsize::new(0),
                route_view: std::sync::OnceLock::new(),
                blobs: std::sync::OnceLock::new(),
            }),
        }
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Exports `view` on `/metrics` (`sage_route_*`), once.
    pub fn set_route_view(&self, view: RouteView) {
        let _ = self.inner.route_view.set(Viewer(view));
    }

    /// Keeps uploaded blobs in `blobs` (`PUT /v1/blobs/...`), once.
    pub fn set_blobs(&self, blobs: BlobStore) {
        let _ = self.inner.blobs.set(blobs);
    }

    /// The router's view of each peer, if a router was given.
    pub(super) fn routes(&self) -> Vec<RouteGauge> {
        self.inner
            .route_view
            .get()
            .map(|view| (view.0)())
            .unwrap_or_default()
    }

    /// The policy now: requests that start from here on use it.
    pub fn policy(&self) -> Arc<Policy> {
        // A poisoned lock only means a writer panicked between two whole
        // `Arc`s: the value is one of them either way.
        self.inner
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the policy (a reload). Requests in progress finish under
    /// the old one; in-flight tasks keep their executor. An executor whose
    /// limits did not change keeps its limiter, with the tasks it counts.
    /// Returns what changed among the peers.
    pub fn reload(&self, mut policy: Policy) -> PolicyChange {
        policy.executors.adopt_limiters(&self.policy().executors);
        let new = Arc::new(policy);
        let old = std::mem::replace(
            &mut *self
                .inner
                .policy
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            new.clone(),
        );
        // Rate buckets of peers no longer trusted are dropped; the others
        // keep their state (a reload does not refill anyone's bucket).
        self.inner
            .peer_rate
            .retain(|key_id| new.trust.by_key_id(key_id).is_some());
        PolicyChange::between(&old, &new)
    }

    /// The node's limits now.
    pub fn limits(&self) -> Limits {
        self.policy().limits.clone()
    }

    /// Tasks executing now.
    pub fn in_flight(&self) -> usize {
        self.inner.running.count()
    }

    /// Admits one more request if fewer than `max` are being handled; the
    /// guard ends it.
    pub(super) fn start_request(&self, max: usize) -> Option<RequestSlot> {
        let requests = &self.inner.requests;
        let mut now = requests.load(Ordering::Relaxed);
        loop {
            if now >= max {
                return None;
            }
            match requests.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(RequestSlot(self.clone())),
                Err(seen) => now = seen,
            }
        }
    }

    /// Requests being handled now (those the concurrency limit counts).
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::Relaxed)
    }
}

/// One request counted against `max_concurrent_requests` until dropped.
pub(super) struct RequestSlot(AppState);

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.inner.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a reload changed among the trusted peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyChange {
    /// Peers trusted now and not before.
    pub added: Vec<String>,
    /// Peers trusted before and not now.
    pub removed: Vec<String>,
    /// Peers whose key changed.
    pub rekeyed: Vec<String>,
}

impl PolicyChange {
    fn between(old: &Policy, new: &Policy) -> Self {
        let mut change = PolicyChange::default();
        for peer in new.trust.iter() {
            match old.trust.find(&peer.name) {
                None => change.added.push(peer.name.clone()),
                Some(before) if before.key_id != peer.key_id => {
                    change.rekeyed.push(peer.name.clone());
                }
                Some(_) => {}
            }
        }
        for peer in old.trust.iter() {
            if new.trust.find(&peer.name).is_none() {
                change.removed.push(peer.name.clone());
            }
        }
        change
    }
}
