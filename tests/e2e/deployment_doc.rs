//! `docs/deployment.md` runs as written: its command blocks are executed,
//! in order, for two machines on loopback, so that the guide cannot drift
//! from the code.
//!
//! Each machine is a directory that stands for its root (`/etc/sage` and
//! `/var/lib/...` live under it) and a loopback port that stands for its
//! address. The guide's `sh` lines run with the real binary, `sudo`
//! dropped; lines that need systemd, a firewall or a build are skipped by
//! name (the unit is checked by `systemd.rs`), and the nodes start with the
//! unit's own `ExecStart=`. A `toml` block is merged into the config of the
//! machine its step names. Inline commands of the prose that start with
//! `sudo sage` run too. A block the walk cannot run says so in an HTML
//! comment just before it (`<!-- guide-test: skip: WHY -->`). Anything else
//! the guide gains (a command, a step) fails the test until it is handled
//! here.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixture::fake_llm;
use crate::util::{sage, Node, Run};

const GUIDE: &str = include_str!("../../docs/deployment.md");
const UNIT: &str = include_str!("../../packaging/systemd/sage.service");

/// Lines the walk does not run: they install files, build, or talk to
/// systemd or a firewall, none of which a test may touch.
const SKIPPED: &[&str] = &[
    "cargo build",
    "install -m 0755 target/release/sage",
    "install -m 0644 packaging/systemd/sage.service",
    "systemctl",
    "systemd-analyze",
    "journalctl",
    "ufw",
    "nft",
];

/// One piece of the guide the walk acts on.
#[derive(Debug)]
enum Piece {
    /// A `sh` block's commands, continuation lines joined.
    Shell(Vec<String>),
    /// A `toml` block.
    Toml(String),
    /// An inline `sudo sage ...` command of the prose.
    Inline(String),
}

/// A `## N. Title` step and its pieces.
#[derive(Debug)]
struct Step {
    number: u32,
    title: String,
    pieces: Vec<Piece>,
}

/// Splits the guide into steps. Fenced blocks in other languages (`ini`,
/// `yaml`) configure systemd and Prometheus, and are left out.
fn steps(guide: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = guide.lines();
    let mut skip_next = false;
    let mut prose = String::new();
    while let Some(line) = lines.next() {
        if let Some(heading) = line.strip_prefix("## ") {
            flush_inline(&mut prose, &mut steps);
            let (number, title) = heading.split_once(". ").expect("a numbered step");
            steps.push(Step {
                number: number.parse().expect("a step number"),
                title: title.to_owned(),
                pieces: Vec::new(),
            });
            continue;
        }
        if line.starts_with("<!-- guide-test: skip") {
            skip_next = true;
            continue;
        }
        let Some(lang) = line.strip_prefix("```") else {
            prose.push_str(line);
            prose.push('\n');
            continue;
        };
        flush_inline(&mut prose, &mut steps);
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let Some(step) = steps.last_mut() else {
            continue;
        };
        if std::mem::take(&mut skip_next) {
            continue;
        }
        match lang {
            "sh" => step.pieces.push(Piece::Shell(joined(&body))),
            "toml" => step.pieces.push(Piece::Toml(body.join("\n"))),
            "ini" | "yaml" => {}
            other => panic!("the guide has a ```{other} block this walk does not know"),
        }
    }
    flush_inline(&mut prose, &mut steps);
    steps
}

/// The inline `sudo sage ...` commands of `prose`, as pieces of the last
/// step; `prose` is emptied.
fn flush_inline(prose: &mut String, steps: &mut [Step]) {
    let text = std::mem::take(prose).replace('\n', " ");
    let Some(step) = steps.last_mut() else {
        return;
    };
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 1 && span.starts_with("sudo sage ") {
            step.pieces.push(Piece::Inline(span.to_owned()));
        }
    }
}

/// A block's lines with `\` continuations joined, blank lines dropped.
fn joined(body: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in body {
        match line.trim_end().strip_suffix('\\') {
            Some(start) => {
                pending.push_str(start);
                pending.push(' ');
            }
            None => {
                pending.push_str(line.trim());
                if !pending.trim().is_empty() {
                    out.push(std::mem::take(&mut pending).trim().to_owned());
                }
                pending.clear();
            }
        }
    }
    out
}

/// One machine of the guide.
struct Machine {
    /// As the guide's comments name it: `thor`, `sprout`.
    host: &'static str,
    /// Its platform name.
    name: &'static str,
    /// The guide's address for it.
    doc_ip: &'static str,
    root: tempfile::TempDir,
    port: u16,
    /// The `sage peer add ...` line its `init` printed.
    peer_add: Option<String>,
    /// Its certificate's fingerprint (hex), once `tls self-signed` made it.
    fingerprint: Option<String>,
    node: Option<Node>,
}

impl Machine {
    fn new(host: &'static str, name: &'static str, doc_ip: &'static str) -> Machine {
        // A port free now; the node binds it at step 7.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Machine {
            host,
            name,
            doc_ip,
            root: tempfile::tempdir().unwrap(),
            port,
            peer_add: None,
            fingerprint: None,
            node: None,
        }
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    /// systemd's `StateDirectory=sage`.
    fn state_dir(&self) -> PathBuf {
        self.root().join("var/lib/sage")
    }
}

/// The walk: two machines and the server the guide's `llm_inference`
/// executor talks to.
struct Walk {
    machines: [Machine; 2],
    llm: crate::util::FakeNode,
}

impl Walk {
    /// `text` as it reads on machine `m`: its root under the guide's
    /// absolute paths, loopback ports for the guide's addresses, the keys
    /// the machines made for the guide's placeholders.
    fn translate(&self, m: usize, text: &str) -> String {
        let here = &self.machines[m];
        let mut text = text.replace("0.0.0.0:50051", &format!("127.0.0.1:{}", here.port));
        text = text.replace("127.0.0.1:8080", &self.llm.addr.to_string());
        for machine in &self.machines {
            text = text.replace(
                &format!("{}:50051", machine.doc_ip),
                &format!("127.0.0.1:{}", machine.port),
            );
            for placeholder in ["public key", "key"] {
                let wanted = format!("<{}'s {placeholder}>", machine.host);
                if text.contains(&wanted) {
                    text = text.replace(&wanted, &public_key(machine));
                }
            }
            if let Some(fingerprint) = &machine.fingerprint {
                text = text.replace(&format!("<{}'s fingerprint>", machine.host), fingerprint);
            }
            // A certificate's IP address SAN.
            text = text.replace(machine.doc_ip, "127.0.0.1");
        }
        let root = here.root().display().to_string();
        for dir in ["/etc/sage", "/var/lib/"] {
            text = text.replace(&format!(" {dir}"), &format!(" {root}{dir}"));
            text = text.replace(&format!("\"{dir}"), &format!("\"{root}{dir}"));
        }
        assert!(
            !text.contains("192.0.2.") && !text.contains('<'),
            "a placeholder or address the walk cannot fill in: {text}"
        );
        text
    }

    /// Runs one `sh` line of step `step`, on the machines it is for.
    fn run_line(&mut self, step: &Step, machine: Option<usize>, line: &str) {
        let command = line.split(" #").next().unwrap().trim();
        let command = command.strip_prefix("sudo ").unwrap_or(command);
        if SKIPPED.iter().any(|skipped| command.starts_with(skipped)) {
            return;
        }
        let targets: Vec<usize> = match machine {
            Some(m) => vec![m],
            None if step.title.contains("(both)") => vec![0, 1],
            None => panic!(
                "step {} runs `{command}` without saying on which machine (`# on thor`)",
                step.number
            ),
        };
        for m in targets {
            self.run_command(step, m, command);
        }
    }

    fn run_command(&mut self, step: &Step, m: usize, command: &str) {
        let text = self.translate(m, command);
        let words = shlex::split(&text).unwrap_or_else(|| panic!("cannot split `{text}`"));
        let root = self.machines[m].root().to_owned();
        let run = match words[0].as_str() {
            "sage" => Run::from(
                sage()
                    .current_dir(&root)
                    .args(&words[1..])
                    .output()
                    .unwrap(),
            ),
            "install" if words[1] == "-d" => {
                Run::from(Command::new("install").args(&words[1..]).output().unwrap())
            }
            other => panic!(
                "step {} runs `{other}`, which this walk does not know",
                step.number
            ),
        };
        assert_eq!(
            run.code, 0,
            "step {} on {}: `{command}` failed ({})\nstdout:\n{}\nstderr:\n{}",
            step.number, self.machines[m].host, run.code, run.stdout, run.stderr
        );
        self.check(step, m, &words, &run);
    }

    /// What a command must have printed, beyond its exit status.
    fn check(&mut self, step: &Step, m: usize, words: &[String], run: &Run) {
        let verb: Vec<&str> = words
            .iter()
            .skip(1)
            .filter(|w| !w.starts_with('-') && !w.starts_with('/'))
            .map(String::as_str)
            .take(2)
            .collect();
        match verb.as_slice() {
            ["init", ..] => {
                let line = run.stdout.trim();
                assert!(line.starts_with("sage peer add "), "init printed {line}");
                self.machines[m].peer_add = Some(line.to_owned());
            }
            ["peer", "add"] if step.number == 3 => {
                // The line the other machine's init printed, as the guide
                // says, after the options that place it on this machine.
                let other = &self.machines[1 - m];
                let printed = other
                    .peer_add
                    .as_deref()
                    .expect("the other machine ran init");
                let from = words.iter().position(|w| w == "peer").unwrap();
                let ran = format!("sage {}", words[from..].join(" "));
                assert_eq!(ran, printed, "step 3 on {}", self.machines[m].host);
            }
            ["tls", "self-signed"] => {
                let fingerprint = run.stdout.lines().next().unwrap_or_default();
                let hex = fingerprint
                    .strip_prefix("sha256:")
                    .expect("a fingerprint first");
                self.machines[m].fingerprint = Some(hex.to_owned());
            }
            ["health", ..] => {
                run.assert_stdout(&["Thor", "healthy"]);
            }
            ["capabilities", ..] => {
                run.assert_stdout(&["llm_inference"]);
            }
            ["delegate", ..] => {
                run.assert_stdout(&["succeeded", "echo: hello"]);
            }
            ["proofs", "list"] => {
                assert_eq!(
                    run.stdout.lines().count(),
                    2,
                    "a header and one receipt:\n{}",
                    run.stdout
                );
            }
            _ => {}
        }
    }

    /// Merges a `toml` block into the config file of the machines of
    /// `step`: the guide says to edit the file `init` wrote.
    fn merge_toml(&self, step: &Step, block: &str) {
        let targets: &[usize] = match step.number {
            // "sprout's is the same with its own name"
            4 => &[0, 1],
            // "Add to thor's sage.toml"
            6 => &[0],
            _ => panic!(
                "step {} has a toml block this walk does not place",
                step.number
            ),
        };
        for &m in targets {
            let machine = &self.machines[m];
            let block = block.replace("\"Thor\"", &format!("\"{}\"", machine.name));
            let block: toml_edit::DocumentMut = self.translate(m, &block).parse().unwrap();
            let path = machine.root().join("etc/sage/sage.toml");
            let mut config: toml_edit::DocumentMut =
                std::fs::read_to_string(&path).unwrap().parse().unwrap();
            merge(config.as_table_mut(), block.as_table());
            std::fs::write(&path, config.to_string()).unwrap();
        }
    }

    /// Starts each machine's node the way the unit does.
    fn start_nodes(&mut self) {
        let exec = UNIT
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/sage "))
            .expect("the unit's ExecStart");
        for m in 0..2 {
            let text = self.translate(m, &format!(" {exec}"));
            let mut command = sage();
            command
                .current_dir(self.machines[m].root())
                .args(shlex::split(&text).unwrap());
            let machine = &self.machines[m];
            let node = Node::spawn(
                command,
                &machine.root().join("notify"),
                &machine.state_dir(),
            );
            assert_eq!(
                node.addr.port(),
                machine.port,
                "the node listens where the guide says"
            );
            self.machines[m].node = Some(node);
        }
    }
}

/// `key show`'s public key of `machine`.
fn public_key(machine: &Machine) -> String {
    let keys = machine.root().join("etc/sage/keys");
    let run = Run::from(
        sage()
            .arg("--keys-dir")
            .arg(&keys)
            .args(["key", "show", "--name", machine.name, "--json"])
            .output()
            .unwrap(),
    );
    run.assert_code(0);
    run.json()["public_key"].as_str().unwrap().to_owned()
}

/// Sets every key of `from` in `into`, tables merged key by key.
fn merge(into: &mut toml_edit::Table, from: &toml_edit::Table) {
    for (key, item) in from.iter() {
        match (
            into.get_mut(key).and_then(|i| i.as_table_mut()),
            item.as_table(),
        ) {
            (Some(table), Some(new)) => merge(table, new),
            _ => {
                into.insert(key, item.clone());
            }
        }
    }
}

/// Which machine a comment puts the following lines on.
fn machine_of(comment: &str) -> Option<usize> {
    for (m, host) in ["thor", "sprout"].into_iter().enumerate() {
        if comment.contains(&format!("on {host}")) || comment.contains(&format!("from {host}")) {
            return Some(m);
        }
    }
    None
}

#[test]
fn the_deployment_guide_runs_as_written_on_two_loopback_nodes() {
    let walk = walk_the_guide(false);
    // The delegation ran on thor's node, for sprout.
    let thor = walk.machines[0].node.as_ref().unwrap();
    let metrics = crate::util::http(thor.addr, "GET", "/metrics", b"");
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains(
            "sage_tasks_total{peer=\"Sprout\",task_type=\"llm_inference\",outcome=\"succeeded\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn the_deployment_guide_runs_as_written_with_its_optional_tls_step() {
    let walk = walk_the_guide(true);
    let thor = walk.machines[0].node.as_ref().unwrap();
    let listening = format!("listening on https://127.0.0.1:{}", thor.addr.port());
    assert!(thor.log().contains(&listening), "{}", thor.log());
    // Sprout's record of thor pins the certificate thor made.
    let fingerprint = walk.machines[0].fingerprint.as_deref().unwrap();
    assert!(thor.log().contains(fingerprint), "{}", thor.log());
}

/// Runs the guide's steps in order, the optional TLS step if `tls`; the
/// checks of [`Walk::check`] hold on the way.
fn walk_the_guide(tls: bool) -> Walk {
    let mut walk = Walk {
        machines: [
            Machine::new("thor", "Thor", "192.0.2.10"),
            Machine::new("sprout", "Sprout", "192.0.2.20"),
        ],
        llm: fake_llm(),
    };
    let steps = steps(GUIDE);
    let numbers: Vec<u32> = steps.iter().map(|s| s.number).collect();
    assert_eq!(numbers, (1..=10).collect::<Vec<_>>(), "the guide's steps");
    for step in &steps {
        if step.title.starts_with("TLS") && !tls {
            continue;
        }
        for piece in &step.pieces {
            match piece {
                Piece::Shell(lines) => {
                    let mut machine = None;
                    for line in lines {
                        if let Some((_, comment)) = line.split_once('#') {
                            machine = machine_of(comment).or(machine);
                        }
                        if !line.starts_with('#') {
                            walk.run_line(step, machine, line);
                        }
                    }
                }
                Piece::Toml(block) => walk.merge_toml(step, block),
                Piece::Inline(command) => {
                    // A prose command is for the machine whose key it
                    // names, or for both.
                    let machine = ["Thor", "Sprout"]
                        .iter()
                        .position(|name| command.contains(&format!("--name {name}")));
                    walk.run_line(step, machine, command);
                }
            }
        }
        if step.number == 7 {
            walk.start_nodes();
        }
    }
    walk
}
