//! Sprout delegates to Thor: the keys, Thor's node state, and the tasks
//! Sprout signs, shared by the tests of this directory and the benchmark
//! (which includes this file by its path). Each includer uses a part.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use sage_crypto::{NodeKey, Peer, PeerSource, TrustStore};
use sage_exec::{Entry, Executor, ExecutorSet};
use sage_service::config::Limits;
use sage_service::delegator::delegation::{sign_task, SignedTask, TaskSpec};
use sage_service::node::{AppState, NodeSetup};
use sage_store::Store;

/// Sprout's key, Thor as Sprout knows it, and Thor's node, which trusts
/// Sprout.
pub struct Fleet {
    pub sprout: NodeKey,
    /// Thor as Sprout knows it: the key its proofs must carry.
    pub thor: Peer,
    pub state: AppState,
    _state_dir: tempfile::TempDir,
}

impl Fleet {
    /// Thor with the built-in executors and `extra`, under `limits`.
    pub fn new(limits: Limits, extra: Vec<(&str, Arc<dyn Executor>)>) -> Self {
        let sprout = NodeKey::generate();
        let thor_key = NodeKey::generate();
        let thor = Peer::new("Thor", thor_key.public(), PeerSource::Given);
        let mut trust = TrustStore::default();
        trust
            .insert(Peer::new("Sprout", sprout.public(), PeerSource::Given))
            .unwrap();
        let mut executors = ExecutorSet::builtin("Thor");
        for (task_type, executor) in extra {
            executors.insert(task_type, Entry::new(executor));
        }
        let state_dir = tempfile::tempdir().unwrap();
        let state = AppState::new(NodeSetup {
            name: "Thor".into(),
            lct_id: "thor_sage_lct".into(),
            key: std::sync::Arc::new(thor_key),
            trust,
            executors,
            limits,
            hardware: Default::default(),
            store: Store::open(state_dir.path()).unwrap(),
        });
        Fleet {
            sprout,
            thor,
            state,
            _state_dir: state_dir,
        }
    }

    /// A task from Sprout to Thor, signed now with a fresh nonce.
    pub fn sign(&self, spec: &TaskSpec) -> SignedTask {
        sign_task(&self.sprout, "sprout_sage_lct", "thor_sage_lct", spec)
    }
}

/// A task of `task_type` with `input`, 1 ATP, the default quality, valid
/// for `lifetime` (also the legacy `max_latency`).
pub fn spec(task_type: &str, input: serde_json::Value, lifetime: Duration) -> TaskSpec {
    TaskSpec {
        task_type: task_type.into(),
        input,
        estimated_cost: 1.0,
        quality: Default::default(),
        lifetime,
        max_latency: lifetime,
        max_cost: None,
        task_id: None,
        earlier_digests: Vec::new(),
        blobs: Vec::new(),
        origin: None,
    }
}
