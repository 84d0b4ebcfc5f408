//! The state every handler shares.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sage_crypto::{KeyId, NodeKey, TrustStore};
use sage_types::capabilities::Hardware;

use crate::config::Limits;
use crate::executor::ExecutorSet;
use crate::store::Store;

/// What a node is made of.
#[derive(Debug)]
pub struct NodeSetup {
    /// Platform name.
    pub name: String,
    /// LCT id; tasks must name it as their audience.
    pub lct_id: String,
    /// The key that signs proofs.
    pub key: NodeKey,
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

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) setup: NodeSetup,
    pub(super) key_id: KeyId,
    pub(super) public_hex: String,
    pub(super) store: Store,
    pub(super) started: Instant,
    in_flight: AtomicUsize,
}

impl AppState {
    /// The state of a node made of `setup`.
    pub fn new(setup: NodeSetup) -> Self {
        let public = setup.key.public();
        AppState {
            inner: Arc::new(Inner {
                key_id: public.key_id(),
                public_hex: public.to_hex(),
                store: setup.store.clone(),
                started: Instant::now(),
                in_flight: AtomicUsize::new(0),
                setup,
            }),
        }
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The node's limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.setup.limits
    }

    /// Tasks executing now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a task as in flight until the guard drops.
    pub(super) fn start_task(&self) -> InFlight {
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// Marks one task in flight; dropping it (even by cancellation) ends it.
pub(super) struct InFlight(AppState);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
