//! `sage key ...`.

use crate::output::out;
use std::path::Path;

use sage_service::keydir::{Identity, KeyDir};
use serde_json::json;

use crate::failure::CmdResult;
use crate::json;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show a platform's name, LCT id and public key (never the private key).
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Platform name (case-insensitive).
    #[arg(long)]
    name: String,
    /// Print the 64 hex characters of the public key alone.
    #[arg(long, conflicts_with = "json")]
    public_only: bool,
}

pub fn run(keys_dir: &Path, command: Command) -> CmdResult {
    let Command::Show(args) = command;
    let identity = KeyDir::new(keys_dir).load_identity(&args.name)?;
    let public = identity.key.public();
    if args.public_only {
        out!("{}", public.to_hex());
    } else if json::enabled() {
        json::report(identity_json(&identity));
    } else {
        out!("name:       {}", identity.name);
        out!("lct id:     {}", identity.lct_id);
        out!("public key: {}", public.to_hex());
        out!("key id:     {}", public.key_id());
        out!("key file:   {}", identity.key_path.display());
        if let Some(mode) = identity.loose_mode {
            eprintln!(
                "warning: {} has mode {mode:o}; others can read the private key: chmod 600 it",
                identity.key_path.display()
            );
        }
    }
    Ok(())
}

/// The `--json` form of an identity (`keygen`, `key show`); never the private key.
pub fn identity_json(identity: &Identity) -> serde_json::Value {
    let public = identity.key.public();
    json!({
        "name": identity.name,
        "lct_id": identity.lct_id,
        "public_key": public.to_hex(),
        "key_id": public.key_id().to_string(),
        "key_file": identity.key_path,
        "loose_mode": identity.loose_mode.map(|m| format!("{m:o}")),
    })
}
