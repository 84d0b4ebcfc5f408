//! `sage tls self-signed|fingerprint`: certificates for `sage serve
//! --tls-cert`, and the TLS trust flags of the commands that take an
//! address (`--tls-ca`, `--tls-fingerprint`).

use crate::output::out;
use std::path::{Path, PathBuf};

use sage_crypto::{CertFingerprint, TlsTrust, TrustStore};
use sage_service::delegator::client::{NodeAddress, Scheme};
use sage_service::keydir::KeyDir;
use sage_service::tls::{self, SelfSignedPlan};
use serde_json::json;

use crate::advice;
use crate::failure::{CmdResult, Failure};
use crate::json;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a self-signed certificate and key for `sage serve --tls-cert
    /// --tls-key`: writes DIR/NAME.crt and DIR/NAME.key (mode 0600) and
    /// prints the certificate's fingerprint, which other nodes pin.
    SelfSigned(SelfSignedArgs),
    /// Print the sha256: fingerprint of a PEM certificate (its first), as
    /// peers pin it with --tls-fingerprint.
    Fingerprint(FingerprintArgs),
}

#[derive(Debug, clap::Args)]
pub struct SelfSignedArgs {
    /// The certificate's name (its common name) and the files' stem:
    /// NAME.crt, NAME.key.
    #[arg(long)]
    name: String,
    /// A host name or IP address that peers use to reach this node (IP
    /// addresses become IP SANs); repeat for several [default: NAME].
    #[arg(long = "san", value_name = "HOST_OR_IP")]
    sans: Vec<String>,
    /// Directory to write the files to.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out_dir: PathBuf,
    /// Days of validity (pinned peers ignore it; CA-checking ones do not).
    #[arg(long, default_value_t = 3650)]
    days: u32,
    /// Replace existing files (peers that pinned the old certificate must
    /// pin the new one).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
pub struct FingerprintArgs {
    /// A PEM certificate file.
    file: PathBuf,
}

pub fn run(keys_dir: &Path, command: Command) -> CmdResult {
    match command {
        Command::SelfSigned(args) => self_signed(keys_dir, args),
        Command::Fingerprint(args) => fingerprint(&args),
    }
}

fn self_signed(keys_dir: &Path, args: SelfSignedArgs) -> CmdResult {
    // Up to 100 years: far enough for a fleet, near enough for every
    // certificate date format.
    if args.days == 0 || args.days > 36_500 {
        return Err(Failure::Usage("--days must be from 1 to 36500".into()));
    }
    let plan = SelfSignedPlan {
        name: args.name.clone(),
        sans: args.sans.clone(),
        days: args.days,
    };
    let files = tls::write_self_signed(&args.out_dir, &plan, args.force)?;
    let fingerprint = files.cert.fingerprint.to_string();
    if json::enabled() {
        let mut report = json!({
            "cert": files.cert_path,
            "key": files.key_path,
            "fingerprint": fingerprint,
            "sans": files.cert.sans,
        });
        let not_after = u64::try_from(files.cert.not_after_unix)
            .ok()
            .and_then(|s| s.checked_mul(1000));
        json::insert_time(&mut report, "not_after", not_after);
        json::report(report);
        return Ok(());
    }
    eprintln!(
        "wrote {} (certificate for {}, valid {} days) and {} (private key, mode 0600)",
        files.cert_path.display(),
        files.cert.sans.join(", "),
        args.days,
        files.key_path.display()
    );
    eprintln!(
        "serve with:     sage serve --tls-cert {} --tls-key {}",
        files.cert_path.display(),
        files.key_path.display()
    );
    // The platform's public key, when this key directory has it.
    let public_key = KeyDir::new(keys_dir)
        .load_identity(&args.name)
        .map(|identity| identity.key.public().to_hex())
        .unwrap_or_else(|_| "HEX".into());
    let host = files.cert.sans.first().cloned().unwrap_or_default();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    eprintln!(
        "on other nodes: sage peer add --name {} --public-key {public_key} --address https://{host}:50051 --tls-fingerprint {fingerprint}",
        args.name
    );
    out!("{fingerprint}");
    Ok(())
}

fn fingerprint(args: &FingerprintArgs) -> CmdResult {
    let fingerprint = tls::certificate_fingerprint(&args.file)?;
    if json::enabled() {
        json::report(json!({ "file": args.file, "fingerprint": fingerprint.to_string() }));
    } else {
        out!("{fingerprint}");
    }
    Ok(())
}

/// `--tls-ca` / `--tls-fingerprint`: how every command that reaches a node
/// (`delegate`, `bench`, `health`, `capabilities`, `peer add`) trusts an
/// `https://` one.
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// For an https:// address: trust certificates issued by the CA(s) in
    /// this PEM file (a self-signed certificate is its own CA; the
    /// address's host must be in it) [default: the known peer's setting,
    /// else the web PKI roots].
    #[arg(long, value_name = "FILE", conflicts_with = "tls_fingerprint")]
    pub tls_ca: Option<PathBuf>,
    /// For an https:// address: accept exactly the certificate with this
    /// fingerprint, whatever its names and dates (`sage tls fingerprint
    /// CERT` prints it).
    #[arg(long, value_name = "sha256:HEX")]
    pub tls_fingerprint: Option<String>,
}

impl TrustArgs {
    /// The trust the flags ask for, if they ask.
    pub fn trust(&self) -> Result<Option<TlsTrust>, Failure> {
        match (&self.tls_ca, &self.tls_fingerprint) {
            (Some(ca), _) => Ok(Some(TlsTrust::Ca(ca.clone()))),
            (None, Some(fp)) => Ok(Some(TlsTrust::Fingerprint(parse_fingerprint(fp)?))),
            (None, None) => Ok(None),
        }
    }

    /// Refuses the flags for a plain-HTTP `addr`, where they would be
    /// ignored.
    pub fn check(&self, addr: &str) -> Result<(), Failure> {
        if self.tls_ca.is_none() && self.tls_fingerprint.is_none() {
            return Ok(());
        }
        let parsed = NodeAddress::parse(addr).map_err(|e| Failure::Usage(e.to_string()))?;
        if parsed.scheme() == Scheme::Https {
            return Ok(());
        }
        Err(Failure::Usage(format!(
            "--tls-ca and --tls-fingerprint are for https:// addresses, and {addr} is plain HTTP; use https://{}",
            parsed.host_port()
        )))
    }

    /// The trust for `addr`: the flags', else that of the known peer whose
    /// address it is, else the web PKI roots.
    pub fn trust_for(&self, peers: Option<&TrustStore>, addr: &str) -> Result<TlsTrust, Failure> {
        self.check(addr)?;
        if let Some(trust) = self.trust()? {
            return Ok(trust);
        }
        Ok(peers
            .and_then(|peers| peer_at(peers, addr))
            .map(|peer| peer.tls.clone())
            .unwrap_or_default())
    }
}

/// The known peer whose recorded address is `addr`: the same host and
/// port, and the same scheme unless `addr` names none.
pub fn peer_at<'a>(peers: &'a TrustStore, addr: &str) -> Option<&'a sage_crypto::Peer> {
    let wanted = NodeAddress::parse(addr).ok()?;
    peers.iter().find(|peer| {
        peer.address
            .as_deref()
            .and_then(|a| NodeAddress::parse(a).ok())
            .is_some_and(|known| {
                known.host_port() == wanted.host_port()
                    && wanted.scheme.is_none_or(|scheme| scheme == known.scheme())
            })
    })
}

/// `--tls-fingerprint`'s value.
pub fn parse_fingerprint(text: &str) -> Result<CertFingerprint, Failure> {
    text.parse()
        .map_err(|e| Failure::Usage(format!("--tls-fingerprint: {}", advice::message(&e))))
}
