//! `sage init`: a node's first files in one step: its key (if missing), a
//! starter `sage.toml`, and the `sage peer add` line its peers must run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sage_service::keydir::{Identity, KeyDir};
use sage_service::KeyDirError;
use serde_json::json;

use crate::failure::{CmdResult, Failure};
use crate::json;
use crate::output::out;

/// Make the node's key (if missing) and a starter sage.toml, and print the
/// `sage peer add` line for the other machines.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Platform name (e.g. Thor).
    #[arg(long)]
    name: String,
    /// Where the config file goes.
    #[arg(long, value_name = "FILE", default_value = "sage.toml")]
    config: PathBuf,
    /// The address the node listens on.
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// The address other machines reach this node at, for the line they
    /// run [default: this host's name and the listening port].
    #[arg(long, value_name = "HOST:PORT", value_parser = super::node_address)]
    address: Option<String>,
    /// Replace an existing config file (the key is never replaced: use
    /// `sage keygen --force`).
    #[arg(long)]
    force: bool,
}

pub fn run(keys_dir: &Path, args: Args) -> CmdResult {
    if args.config.exists() && !args.force {
        return Err(Failure::Failed(format!(
            "{} already exists; pass --force to replace it (the key is kept)",
            args.config.display()
        )));
    }
    // Before the key is made: a config that cannot be written changes
    // nothing.
    let config_dir = match args.config.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !config_dir.is_dir() {
        return Err(Failure::Usage(format!(
            "--config {}: {} is not a directory",
            args.config.display(),
            config_dir.display()
        )));
    }
    let keys = KeyDir::new(keys_dir);
    let (identity, created) = match keys.load_identity(&args.name) {
        Ok(identity) => (identity, false),
        Err(KeyDirError::NotFound { .. }) => (keys.generate(&args.name, None, false)?, true),
        Err(e) => return Err(e.into()),
    };
    let keys_path = std::fs::canonicalize(keys_dir)
        .map_err(|e| Failure::Failed(format!("cannot resolve {}: {e}", keys_dir.display())))?;
    std::fs::write(
        &args.config,
        starter_config(&identity.name, args.listen, &keys_path),
    )
    .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", args.config.display())))?;
    let address = args.address.unwrap_or_else(|| {
        let host = match args.listen.ip() {
            ip if ip.is_unspecified() => hostname(),
            ip => ip.to_string(),
        };
        format!("{host}:{}", args.listen.port())
    });
    let peer_add = peer_add_line(&identity, &address);
    if json::enabled() {
        json::report(json!({
            "config": args.config,
            "key": super::key::identity_json(&identity),
            "key_created": created,
            "peer_add": peer_add,
        }));
        return Ok(());
    }
    let key_note = if created {
        "made"
    } else {
        "kept the existing key"
    };
    eprintln!("{key_note}: {}", identity.key_path.display());
    eprintln!(
        "wrote {}: check it with `sage config check --config {0}`, then `sage serve --config {0}`",
        args.config.display()
    );
    eprintln!("on each machine that delegates to {}, run:", identity.name);
    out!("{}", peer_add.join(" "));
    Ok(())
}

/// `sage peer add ...` for `identity` at `address`, as argv.
fn peer_add_line(identity: &Identity, address: &str) -> Vec<String> {
    [
        "sage",
        "peer",
        "add",
        "--name",
        &identity.name,
        "--public-key",
        &identity.key.public().to_hex(),
        "--lct",
        &identity.lct_id,
        "--address",
        address,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// This machine's host name, as the kernel has it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "HOST".to_owned())
}

/// The starter config: the node, the built-in `echo`, a `command`
/// executor that runs `cat`, and commented `http` examples.
fn starter_config(name: &str, listen: SocketAddr, keys_dir: &Path) -> String {
    let keys_dir = toml_string(&keys_dir.display().to_string());
    format!(
        r#"# sage node {name}: `sage config check --config FILE` shows every setting.
# The executor contract (environment, stdin, stdout, the quality report):
# docs/executors.md.

[node]
name = "{name}"
listen = "{listen}"
keys_dir = {keys_dir}
# state_dir = "/var/lib/sage"     # default: $STATE_DIRECTORY under systemd, else ./state
# tls_cert = "{lower}.crt"          # `sage tls self-signed --name {lower}` makes a pair
# tls_key = "{lower}.key"

[limits]
clock_skew = "5m"
max_task_lifetime = "1h"

# `echo`: the result is the input; a first delegation to try.
[executors.echo]
kind = "builtin"
builtin = "echo"

# A program: the task input arrives as JSON on stdin, its stdout (JSON) is
# the result. `cat` returns the input; put your own program here.
[executors.cat]
kind = "command"
command = ["cat"]
timeout = "30s"
max_concurrency = 2

# An OpenAI-compatible server (llama.cpp, vLLM, Ollama) for llm_inference:
# [executors.llm_inference]
# kind = "http"
# url = "http://127.0.0.1:8080/v1/chat/completions"
# mode = "openai"
# model = "llama-3.1-8b"
# timeout = "2m"
"#,
        lower = name.to_lowercase(),
    )
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    // serde_json's escaping is TOML's for a basic string (\", \\, \n, \uXXXX).
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sage_service::config::file::ConfigFile;

    #[test]
    fn the_starter_config_parses_and_builds_its_executors() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys \"odd\"");
        std::fs::create_dir(&keys).unwrap();
        let path = dir.path().join("sage.toml");
        std::fs::write(
            &path,
            starter_config("Thor", "0.0.0.0:50051".parse().unwrap(), &keys),
        )
        .unwrap();
        let file = ConfigFile::load(&path).unwrap();
        assert_eq!(file.node.name.as_deref(), Some("Thor"));
        assert_eq!(file.node.keys_dir.as_deref(), Some(keys.as_path()));
        let executors = file.executors(&path, "Thor", None, None).unwrap();
        let served: Vec<&str> = executors.describe().into_iter().map(|(t, _)| t).collect();
        assert_eq!(served, ["cat", "echo"]);
    }
}
