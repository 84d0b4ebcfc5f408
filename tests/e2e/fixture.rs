//! Set-ups that tests share, so that a test says only what differs: key
//! directories with their keys made, peers that trust each other, and
//! `sage` commands run beside a node.
//!
//! ```ignore
//! let keys = Keys::with(&["Thor", "Sprout"]);        // one directory, two keys
//! let thor = keys.serve("Thor", &[]);
//! let fleet = Fleet::new().node("Thor").node("Sprout").trusting_each_other();
//! let thor = fleet.keys("Thor").serve("Thor", &[]);
//! ```

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::util::{FakeNode, Keys, Node, Run};

/// `delegate --local Sprout --target Thor EXTRA...`: the arguments of the
/// delegation most tests make.
pub fn delegation<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    delegation_from("Sprout", "Thor", extra)
}

/// `delegate --local LOCAL --target TARGET EXTRA...`.
pub fn delegation_from<'a>(local: &'a str, target: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["delegate", "--local", local, "--target", target];
    args.extend_from_slice(extra);
    args
}

/// The set-up most tests start from: one key directory with Thor's and
/// Sprout's keys, and Thor serving (Sprout is a known peer).
pub fn serving_thor() -> (Keys, Node) {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let thor = keys.serve("Thor", &[]);
    (keys, thor)
}

impl Keys {
    /// A key directory holding a key for each of `names`.
    pub fn with(names: &[&str]) -> Keys {
        let keys = Keys::new();
        for name in names {
            keys.keygen(name);
        }
        keys
    }

    /// A key directory holding copies of `from`'s key files of `names`:
    /// the same platforms, with another trust store.
    pub fn copying(from: &Keys, names: &[&str]) -> Keys {
        let keys = Keys::new();
        std::fs::create_dir_all(keys.path()).expect("create the key directory");
        for name in names {
            let file = format!("{name}_ed25519.key");
            std::fs::copy(from.path().join(&file), keys.path().join(&file))
                .expect("copy a key file");
        }
        keys
    }

    /// `sage peer add --name NAME --public-key KEY EXTRA...` (`--address`,
    /// `--protocol`), which must succeed.
    pub fn trust(&self, name: &str, public_key: &str, extra: &[&str]) {
        let mut args = vec!["peer", "add", "--name", name, "--public-key", public_key];
        args.extend_from_slice(extra);
        self.run(&args).assert_code(0);
    }

    /// `sage serve --name NAME --host 127.0.0.1 --port 0 EXTRA...` run to
    /// its end: for a node that must refuse to start.
    pub fn serve_to_end(&self, name: &str, extra: &[&str]) -> Run {
        let mut args = crate::util::serve_args(name).to_vec();
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// The record of peer `name` in `sage peer list --json`.
    #[track_caller]
    pub fn peer_record(&self, name: &str) -> serde_json::Value {
        let list = self.run(&["peer", "list", "--json"]);
        list.json()["peers"]
            .as_array()
            .unwrap_or_else(|| panic!("no peers in {}", list.stdout))
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {}", list.stdout))
            .clone()
    }

    /// [`Keys::run`] on a thread of its own: for a command that a test
    /// acts on while it runs (a node killed under it, a queue it fills).
    pub fn spawn(&self, args: &[&str]) -> JoinHandle<Run> {
        let mut command = self.command(args);
        std::thread::spawn(move || Run::from(command.output().expect("run sage")))
    }
}

/// Platforms that each have a key directory of their own, as on separate
/// machines; built with [`Fleet::node`] and [`Fleet::trusting_each_other`].
pub struct Fleet {
    members: Vec<(String, Keys, String)>,
}

impl Fleet {
    pub fn new() -> Fleet {
        Fleet {
            members: Vec::new(),
        }
    }

    /// Adds `name`, with its own key directory and a new key.
    pub fn node(mut self, name: &str) -> Fleet {
        let keys = Keys::new();
        let public = keys.keygen(name);
        self.members.push((name.to_owned(), keys, public));
        self
    }

    /// Every member trusts every other by public key (no addresses: ports
    /// are picked when the nodes start).
    pub fn trusting_each_other(self) -> Fleet {
        for (name, keys, _) in &self.members {
            for (peer, _, public) in &self.members {
                if peer != name {
                    keys.trust(peer, public, &[]);
                }
            }
        }
        self
    }

    /// `name` trusts each of `peers`.
    pub fn trust(self, name: &str, peers: &[&str]) -> Fleet {
        for peer in peers {
            self.keys(name).trust(peer, self.public(peer), &[]);
        }
        self
    }

    /// The key directory of `name`.
    #[track_caller]
    pub fn keys(&self, name: &str) -> &Keys {
        &self.member(name).1
    }

    /// The public key hex of `name`.
    #[track_caller]
    pub fn public(&self, name: &str) -> &str {
        &self.member(name).2
    }

    #[track_caller]
    fn member(&self, name: &str) -> &(String, Keys, String) {
        self.members
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in the fleet"))
    }
}

/// An OpenAI-compatible chat server: answers with the last user message,
/// requires the bearer token.
pub fn fake_llm() -> FakeNode {
    fake_llm_seen().0
}

/// [`fake_llm`], and every request body it was sent.
pub fn fake_llm_seen() -> (FakeNode, Arc<Mutex<Vec<serde_json::Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let llm = FakeNode::start(move |method, path, body| {
        if (method, path) != ("POST", "/v1/chat/completions") {
            return Some((404, b"{}".to_vec()));
        }
        let request: serde_json::Value = serde_json::from_slice(body).unwrap();
        kept.lock().unwrap().push(request.clone());
        let last = request["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned();
        let answer = serde_json::json!({
            "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {last}")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        });
        Some((200, serde_json::to_vec(&answer).unwrap()))
    });
    (llm, seen)
}
