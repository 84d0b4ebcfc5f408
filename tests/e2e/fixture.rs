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

use std::thread::JoinHandle;

use crate::util::{sage, Keys, Run};

impl Keys {
    /// A key directory holding a key for each of `names`.
    pub fn with(names: &[&str]) -> Keys {
        let keys = Keys::new();
        for name in names {
            keys.keygen(name);
        }
        keys
    }

    /// The public key hex of `name`, whose key is in this directory.
    pub fn public(&self, name: &str) -> String {
        self.key(name).public().to_hex()
    }

    /// `sage peer add --name NAME --public-key KEY [--address ADDR]`.
    pub fn trust(&self, name: &str, public_key: &str, address: Option<&str>) {
        let mut args = vec!["peer", "add", "--name", name, "--public-key", public_key];
        if let Some(address) = address {
            args.extend(["--address", address]);
        }
        self.run(&args).assert_code(0);
    }

    /// [`Keys::run`] on a thread of its own: for a command that a test
    /// acts on while it runs (a node killed under it, a queue it fills).
    pub fn spawn(&self, args: &[&str]) -> JoinHandle<Run> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (dir, state) = (self.path().to_owned(), self.state_dir());
        std::thread::spawn(move || {
            let output = sage()
                .env("SAGE_STATE_DIR", state)
                .arg("--keys-dir")
                .arg(dir)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run sage");
            Run::from(output)
        })
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
                    keys.trust(peer, public, None);
                }
            }
        }
        self
    }

    /// `name` trusts each of `peers`.
    pub fn trust(self, name: &str, peers: &[&str]) -> Fleet {
        for peer in peers {
            self.keys(name).trust(peer, self.public(peer), None);
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
