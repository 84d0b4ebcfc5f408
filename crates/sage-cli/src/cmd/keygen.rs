//! `sage keygen`.

use crate::output::out;
use std::path::Path;

use sage_service::keydir::KeyDir;

use crate::failure::CmdResult;
use crate::json;

/// Make a new key: writes DIR/NAME_ed25519.key (64 bytes: seed then public key, mode 0600) and prints the public key.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Platform name (e.g. Thor).
    #[arg(long)]
    name: String,
    /// LCT id, if not the default NAME_sage_lct (lowercased).
    #[arg(long)]
    lct: Option<String>,
    /// Replace an existing key (the old one is lost).
    #[arg(long)]
    force: bool,
}

pub fn run(keys_dir: &Path, args: Args) -> CmdResult {
    let identity = KeyDir::new(keys_dir).generate(&args.name, args.lct.as_deref(), args.force)?;
    let public = identity.key.public();
    if json::enabled() {
        json::report(super::key::identity_json(&identity));
    } else {
        eprintln!(
            "wrote {} (mode 0600) for {} ({})",
            identity.key_path.display(),
            identity.name,
            identity.lct_id
        );
        eprintln!(
            "give peers this public key: sage peer add --name {} --public-key <key>",
            identity.name
        );
        out!("{}", public.to_hex());
    }
    Ok(())
}
