//! `keystake-signer init --config FILE`: the data directory (mode 0700), the SQLite store, the
//! HSM objects (SoftHSM2 configuration and random PIN files when missing, the token with its
//! sealing key, the enrolment key pair), the keymanager API token file and — when the
//! configuration names a `policy_file` that does not exist yet and a `[client]` certificate —
//! a first policy granting that one certificate (by fingerprint) everything, so a fresh
//! appliance is deny-by-default for every other certificate of the CA. Idempotent: what exists
//! is kept.
//!
//! Refuses: a configuration that does not load, one without `hsm.so_pin_file`, a database that
//! does not open, an HSM token that cannot be initialised, and an existing keymanager token file
//! that holds no valid token.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Result;

use super::load_config;
use crate::config::Config;

/// `keystake-signer init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    pub config: PathBuf,
}

pub fn run(args: InitArgs) -> Result<()> {
    init(&load_config(&args.config)?)
}

/// `init`: data directory, SQLite store, HSM token, sealing key and enrolment key pair.
/// Idempotent.
pub fn init(config: &Config) -> Result<()> {
    crate::files::create_private_dir(&config.data_dir)?;
    crate::app::initialize_hsm(config)?;
    let store = crate::app::open_store(config)?;
    let token_file = config.keymanager_token_path();
    if crate::service::keymanager::ensure_token_file(&token_file)? {
        tracing::info!(file = %token_file.display(), "generated the keymanager API token");
    }
    if let Some(written) = write_first_policy(config)? {
        tracing::info!(file = %written.display(), "wrote a policy naming the [client] certificate only");
    }
    tracing::info!(database = %store.path().display(), hsm = %config.hsm, "initialised");
    Ok(())
}

/// The policy `init` writes for a fresh appliance: the `[client]` certificate, named by its
/// SHA-256 fingerprint (no other certificate of the CA matches), with every operation on every
/// key, exits and deposits included (it is the operator's own identity).
pub fn first_policy(cert_pem: &[u8], cert_path: &std::path::Path) -> Result<String> {
    use anyhow::Context as _;
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .with_context(|| format!("{}: no certificate", cert_path.display()))?
        .with_context(|| format!("{}: not a PEM certificate", cert_path.display()))?;
    let identity = crate::net::tls::ClientIdentity::from_der(&der)?;
    Ok(format!(
        r#"# Written by `keystake-signer init`: only the first client certificate may use this appliance.
# {path} (CN {cn:?}). Add further clients with their own grants (docs/authorization.md),
# check with `keystake-signer policy check --policy <file>`, then reload (SIGHUP).
[[client]]
fingerprint = "{fingerprint}"
[[client.grant]]
keys = "all"
operations = ["all", "voluntary_exit", "deposit"]

# DKG and resharing peers (docs/dkg.md, "Granting the peers"): "all" never includes `dkg`;
# grant it to each peer's certificate pinned in its identity file, by SHA-256 fingerprint:
# [[client]]
# fingerprint = "<sha256 of the peer's tls_certificate>"
# [[client.grant]]
# keys = "all"
# operations = ["dkg"]
"#,
        path = cert_path.display(),
        cn = identity.common_name.clone().unwrap_or_default(),
        fingerprint = identity.fingerprint_hex(),
    ))
}

/// Write [`first_policy`] to `policy_file` when it is configured, missing, and a `[client]`
/// certificate exists. Returns the file written.
fn write_first_policy(config: &Config) -> Result<Option<PathBuf>> {
    let (Some(path), Some(client)) = (&config.policy_file, &config.client) else {
        return Ok(None);
    };
    if path.exists() || !client.cert.exists() {
        return Ok(None);
    }
    let text = first_policy(&std::fs::read(&client.cert)?, &client.cert)?;
    crate::files::write_file(
        path,
        text.as_bytes(),
        crate::files::PRIVATE_FILE_MODE,
        crate::files::Overwrite::Refuse,
    )?;
    Ok(Some(path.clone()))
}
