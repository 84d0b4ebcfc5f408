//! docs/cli-json.md documents every object `--json` prints.
//!
//! One test runs each command that reports, with `--json`, against a real
//! node, to success and to failure, and checks that stdout is exactly one
//! JSON object whose fields are the ones the document lists for its
//! `schema` (no field unlisted, none listed as `always` missing), that a
//! failure carries `error: {code, message}` with stderr's message, and that
//! the exit code is the one of the same run without `--json`. It also
//! fails when a documented schema is never printed, so that the document
//! holds no stale section.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::fixture::{delegation, serving_thor};
use crate::util::{Keys, Run};

/// The workspace root.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// The document, relative to the root.
const DOC: &str = "docs/cli-json.md";

/// One documented field: its path (`peers`, `[]`, `name` for
/// `peers[].name`) and whether every object has it.
#[derive(Debug)]
struct Field {
    path: Vec<String>,
    always: bool,
}

/// The document's schemas: each `### `sage.X/1`` heading and the first
/// column of the table under it.
fn documented() -> BTreeMap<String, Vec<Field>> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(DOC)).expect("read docs/cli-json.md");
    let mut schemas: BTreeMap<String, Vec<Field>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            current = heading
                .trim()
                .strip_prefix('`')
                .and_then(|h| h.strip_suffix('`'))
                .map(str::to_owned);
            if let Some(schema) = &current {
                schemas.entry(schema.clone()).or_default();
            }
            continue;
        }
        let (Some(schema), Some(row)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        let Some((name, rest)) = row.split_once('`') else {
            continue;
        };
        let present = rest
            .trim_start_matches(" |")
            .split('|')
            .next()
            .unwrap_or("");
        let mut path = Vec::new();
        for segment in name.split('.') {
            match segment.strip_suffix("[]") {
                Some(array) => {
                    path.push(array.to_owned());
                    path.push("[]".to_owned());
                }
                None => path.push(segment.to_owned()),
            }
        }
        schemas.get_mut(schema).unwrap().push(Field {
            path,
            always: present.trim() == "always",
        });
    }
    schemas
}

/// Where each field of `value`, at `at`, differs from `fields`. An object
/// is checked at the top, and below it where the document lists its
/// fields.
fn check(value: &Value, at: &[String], fields: &[Field], problems: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let children: Vec<&Field> = fields
                .iter()
                .filter(|f| f.path.len() == at.len() + 1 && f.path.starts_with(at))
                .collect();
            if children.is_empty() && !at.is_empty() {
                return;
            }
            let shown = |name: &str| {
                let mut path = at.join(".").replace(".[]", "[]");
                if !path.is_empty() {
                    path.push('.');
                }
                path + name
            };
            for key in map.keys() {
                if !children.iter().any(|f| f.path.last() == Some(key)) {
                    problems.push(format!("field `{}` is not documented", shown(key)));
                }
            }
            for field in children.iter().filter(|f| f.always) {
                let name = field.path.last().unwrap();
                if !map.contains_key(name) {
                    problems.push(format!("documented field `{}` is missing", shown(name)));
                }
            }
            for (key, value) in map {
                let mut path = at.to_vec();
                path.push(key.clone());
                check(value, &path, fields, problems);
            }
        }
        Value::Array(items) => {
            let mut path = at.to_vec();
            path.push("[]".to_owned());
            for item in items {
                check(item, &path, fields, problems);
            }
        }
        _ => {}
    }
}

/// The runs of the test, checked against the document as they are made.
struct Checker {
    doc: BTreeMap<String, Vec<Field>>,
    seen: BTreeSet<String>,
    problems: Vec<String>,
}

impl Checker {
    /// Runs `sage ARGS... --json`, which must exit `code`; its object.
    #[track_caller]
    fn once(&mut self, keys: &Keys, args: &[&str], code: i32) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let run = keys.run(&with_json);
        run.assert_code(code);
        self.object(args, &run)
    }

    /// [`Checker::once`], and the same run without `--json`, which must
    /// exit with the same code: for runs that change nothing.
    #[track_caller]
    fn both(&mut self, keys: &Keys, args: &[&str], code: i32) -> Value {
        let object = self.once(keys, args, code);
        keys.run(args).assert_code(code);
        object
    }

    /// Checks `run`'s stdout: one object, documented fields, the error.
    #[track_caller]
    fn object(&mut self, args: &[&str], run: &Run) -> Value {
        let mut stream = serde_json::Deserializer::from_str(&run.stdout).into_iter::<Value>();
        let object = match stream.next() {
            Some(Ok(object)) if object.is_object() => object,
            other => panic!(
                "sage {args:?} --json: stdout is not one object ({other:?}):\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            ),
        };
        assert!(
            stream.next().is_none(),
            "sage {args:?} --json printed more than one object:\n{}",
            run.stdout
        );
        let schema = object["schema"].as_str().unwrap_or_default().to_owned();
        let Some(fields) = self.doc.get(&schema) else {
            self.problems.push(format!(
                "sage {args:?}: schema {schema:?} has no section in {DOC}"
            ));
            return object;
        };
        let mut problems = Vec::new();
        check(&object, &[], fields, &mut problems);
        let error = &object["error"];
        if run.code == 0 {
            if !error.is_null() {
                problems.push("a success carries `error`".into());
            }
        } else {
            let (Some(code), Some(message)) = (error["code"].as_str(), error["message"].as_str())
            else {
                panic!("sage {args:?}: a failure without error.code and error.message: {object}");
            };
            let snake = !code.is_empty()
                && code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !snake {
                problems.push(format!("error code {code:?} is not snake_case"));
            }
            if !run.stderr.contains(&format!("sage: {message}")) {
                problems.push(format!(
                    "error.message {message:?} is not stderr's:\n{}",
                    run.stderr
                ));
            }
            if error.as_object().map(|e| e.len()) != Some(2) {
                problems.push(format!(
                    "error has other fields than code and message: {error}"
                ));
            }
        }
        self.problems.extend(
            problems
                .into_iter()
                .map(|p| format!("sage {} --json ({schema}): {p}", args.join(" "))),
        );
        self.seen.insert(schema);
        object
    }
}

#[test]
fn every_json_object_is_documented_and_failures_are_objects_too() {
    let mut c = Checker {
        doc: documented(),
        seen: BTreeSet::new(),
        problems: Vec::new(),
    };
    assert!(
        c.doc.len() >= 15,
        "only {} schemas in {DOC}: is the parser broken?",
        c.doc.len()
    );
    let (keys, thor) = serving_thor();
    let (addr, port) = (thor.address(), thor.port());
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str| files.path().join(name).to_str().unwrap().to_owned();

    // Keys.
    c.both(&keys, &["key", "show", "--name", "Thor"], 0);
    let missing = c.both(&keys, &["key", "show", "--name", "Nobody"], 1);
    assert_eq!(missing["schema"], "sage.error/1");
    assert_eq!(missing["command"], "key show");
    assert_eq!(missing["error"]["code"], "key_not_found");
    let other = Keys::new();
    let odin = c.once(&other, &["keygen", "--name", "Odin"], 0);
    let odin_key = odin["public_key"].as_str().unwrap().to_owned();
    let exists = c.both(&other, &["keygen", "--name", "Odin"], 1);
    assert_eq!(exists["error"]["code"], "key_exists");
    // The flag works before the subcommand too.
    let before = keys.run(&["--json", "key", "show", "--name", "Thor"]);
    before.assert_code(0);
    assert_eq!(before.json()["schema"], "sage.key.show/1");

    // Peers.
    let odin_args = ["--name", "Odin", "--public-key", &odin_key];
    let added = c.once(
        &keys,
        &[
            &["peer", "add"],
            &odin_args[..],
            &["--address", "127.0.0.1:1"],
        ]
        .concat(),
        0,
    );
    assert_eq!(added["outcome"], "added");
    c.both(&keys, &["peer", "list", "--local", "Sprout"], 0);
    c.both(&keys, &["peer", "list"], 0);
    c.once(&keys, &["peer", "remove", "--name", "Odin"], 0);
    let gone = c.both(&keys, &["peer", "remove", "--name", "Odin"], 1);
    assert_eq!(gone["error"]["code"], "unknown_peer");
    let bad_name = [
        "peer",
        "add",
        "--name",
        "no spaces",
        "--public-key",
        &odin_key,
    ];
    assert_eq!(c.both(&keys, &bad_name, 2)["error"]["code"], "usage");

    // One node's health and capabilities.
    let health = c.both(&keys, &["health", &addr], 0);
    let rtt = health["rtt_ms"].as_f64().unwrap();
    assert_eq!(
        rtt,
        (rtt * 1000.0).round() / 1000.0,
        "rtt_ms has more than 3 decimals: {rtt}"
    );
    let down = c.both(&keys, &["health", "127.0.0.1:1"], 1);
    assert_eq!(down["error"]["code"], "unreachable");
    c.both(&keys, &["capabilities", &addr], 0);
    c.both(&keys, &["capabilities", "127.0.0.1:1"], 1);

    // Delegations: a verified one, a refusal with the node's own code, an
    // unreachable node, an unknown peer.
    let delegated = c.once(&keys, &delegation(&["--port", &port]), 0);
    let task_id = delegated["proof"]["task_id"].as_str().unwrap().to_owned();
    assert!(delegated["sent_at_ms"].is_u64(), "{delegated}");
    let refused = c.both(
        &keys,
        &delegation(&["--port", &port, "--task-type", "nope"]),
        1,
    );
    assert_eq!(refused["error"]["code"], "unsupported_task");
    let unreachable = c.both(&keys, &delegation(&["--port", "1"]), 1);
    assert_eq!(unreachable["error"]["code"], "unreachable");
    let unknown = ["delegate", "--local", "Sprout", "--target", "Nobody"];
    assert_eq!(c.both(&keys, &unknown, 1)["error"]["code"], "failed");
    // Through the node's local API: Thor's own socket, Thor running it.
    let via = [
        "delegate",
        "--via-node",
        "--target",
        "Thor",
        "--task-type",
        "echo",
    ];
    let via = c.once(&keys, &via, 0);
    assert_eq!(via["executor"]["name"], "Thor", "{via}");
    let via_failed = [
        "delegate",
        "--via-node",
        "--target",
        "Thor",
        "--task-type",
        "nope",
    ];
    assert_eq!(
        c.both(&keys, &via_failed, 1)["error"]["code"],
        "unsupported_task"
    );
    // Routed: Thor is known by its key file only, without an address.
    let routed = ["delegate", "--local", "Sprout", "--task-type", "echo"];
    assert_eq!(c.both(&keys, &routed, 1)["error"]["code"], "no_candidate");
    let thor_pub = keys.key("Thor").public().to_hex();
    keys.run(&[
        "peer",
        "add",
        "--name",
        "Thor",
        "--public-key",
        &thor_pub,
        "--address",
        &addr,
    ])
    .assert_code(0);
    let routed = c.once(&keys, &routed, 0);
    assert_eq!(routed["route"]["candidates"][0], "Thor", "{routed}");
    // The router's view: rebuilt from the ledger, now that it holds some.
    let listed = c.both(&keys, &["peer", "list", "--local", "Sprout"], 0);
    assert!(listed["peers"][0]["route"].is_object(), "{listed}");
    let explain = ["route", "explain", "--local", "Sprout", "--task-type"];
    let explained = c.both(&keys, &[&explain[..], &["echo"]].concat(), 0);
    assert_eq!(explained["picked"], "Thor", "{explained}");
    let nobody = c.both(&keys, &[&explain[..], &["vision3d"]].concat(), 0);
    assert!(nobody["picked"].is_null(), "{nobody}");
    let no_local = ["route", "explain", "--task-type", "echo"];
    assert_eq!(c.both(&keys, &no_local, 2)["error"]["code"], "usage");

    // Load.
    let bench = [
        "bench",
        "--local",
        "Sprout",
        "--target",
        &addr,
        "--concurrency",
        "1",
    ];
    c.once(&keys, &[&bench[..], &["--requests", "3"]].concat(), 0);
    c.both(&keys, &[&bench[..], &["--requests", "0"]].concat(), 2);
    // Routed load, over the peers that serve the task type.
    let routed_bench = c.once(
        &keys,
        &[
            "bench",
            "--local",
            "Sprout",
            "--requests",
            "3",
            "--concurrency",
            "1",
        ],
        0,
    );
    assert_eq!(
        routed_bench["sage"]["peers"][0]["peer"], "Thor",
        "{routed_bench}"
    );
    assert_eq!(routed_bench["sage"]["peers"][0]["ok"], 3, "{routed_bench}");

    // Receipts.
    let listed = c.both(&keys, &["proofs", "list"], 0);
    assert!(listed["delegations"][0]["sent_at"].is_string(), "{listed}");
    c.both(&keys, &["proofs", "list", "--since", "yesterday"], 2);
    c.both(&keys, &["proofs", "show", &task_id], 0);
    c.both(&keys, &["proofs", "show", "no-such-task"], 1);
    let exported = c.both(&keys, &["proofs", "export"], 0);
    assert_eq!(
        exported["count"],
        exported["receipts"].as_array().unwrap().len()
    );
    let export = file("receipts.jsonl");
    c.both(&keys, &["proofs", "export", "--out", &export], 0);
    c.both(&keys, &["proofs", "verify", &export], 0);
    let bad = file("bad.jsonl");
    std::fs::write(&bad, "{}\n").unwrap();
    let invalid = c.both(&keys, &["proofs", "verify", &bad], 1);
    assert_eq!(invalid["schema"], "sage.proofs.verify/1");
    assert_eq!(invalid["invalid"], 1);

    // Config.
    let config = file("sage.toml");
    c.once(&keys, &["init", "--name", "Thor", "--config", &config], 0);
    c.both(&keys, &["config", "check", "--config", &config], 0);
    c.both(
        &keys,
        &["config", "check", "--config", &file("missing.toml")],
        1,
    );

    // TLS files.
    let out_dir = files.path().to_str().unwrap();
    let tls = ["tls", "self-signed", "--name", "thor", "--out-dir", out_dir];
    c.once(&keys, &tls, 0);
    c.both(&keys, &["tls", "fingerprint", &file("thor.crt")], 0);
    c.both(&keys, &["tls", "fingerprint", &file("missing.crt")], 1);
    c.both(&keys, &[&tls[..], &["--days", "0"]].concat(), 2);

    // Commands without a report refuse the flag (without it, serve runs).
    let serve = c.once(&keys, &["serve", "--name", "Thor"], 2);
    assert_eq!(serve["error"]["code"], "usage");
    c.once(&keys, &["completions", "bash"], 2);

    let unseen: Vec<_> = c.doc.keys().filter(|s| !c.seen.contains(*s)).collect();
    assert!(
        unseen.is_empty(),
        "{DOC} documents schemas no run printed: {unseen:?}"
    );
    assert!(
        c.problems.is_empty(),
        "the --json objects differ from {DOC}:\n{}",
        c.problems.join("\n")
    );
}
