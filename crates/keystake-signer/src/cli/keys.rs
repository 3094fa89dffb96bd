//! `keystake-signer keys import|import-share|list`: the validator keys. `import` decrypts an
//! EIP-2335 keystore and `import-share` opens a threshold share package from `split` in this
//! appliance's HSM (docs/threshold.md); either way the key is sealed by the HSM and stored
//! sealed, and the plaintext exists only in memory. `list` prints one line per stored key (no
//! HSM access needed).
//!
//! Refuses: keystores that do not parse or decrypt with the password file; `import-share`
//! without `--manifest` (the package's own copy authenticates nothing); share packages for
//! another appliance, tampered, with an ephemeral key that is not a P-256 point, or not matching
//! the `--manifest` given (or a manifest that does not verify); a share that does not match the
//! manifest's commitments; a share of a validator this appliance already holds a key of, even a
//! deleted one.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::manifest::load_manifest;
use super::{load_config, read_json, read_password_file};
use crate::app::open_sealer;
use crate::config::Config;
use crate::hsm::Sealer;
use crate::service;
use crate::store::{InsertOutcome, ShareOrigin, ThresholdInfo};
use keystake_core::keystore;
use keystake_core::manifest::{CheckedPackage, SharePackage};
use keystake_core::threshold::SecretShare;
use keystake_core::types::{BlsPublicKey, ShareIndex, Threshold};

/// `keystake-signer keys …`.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Import an EIP-2335 keystore; the key is sealed by the HSM, never written in plaintext.
    Import {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        keystore: PathBuf,
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Import a threshold share package from `split`; it is opened by the HSM and sealed, never written in plaintext.
    ImportShare(ImportShareArgs),
    /// List stored keys.
    List {
        #[arg(long)]
        config: PathBuf,
    },
}

/// `keystake-signer keys import-share`.
#[derive(Debug, clap::Args)]
pub struct ImportShareArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// The share package (`share-<i>.pkg`) made for this appliance.
    #[arg(long)]
    pub package: PathBuf,
    /// The cluster manifest the package must have been made with, obtained over a channel the
    /// operator trusts (required: the manifest inside a package proves nothing — a forger picks
    /// commitments that make any share pass the Feldman check for any group key).
    #[arg(long)]
    pub manifest: PathBuf,
}

pub fn run(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Import {
            config,
            keystore,
            password_file,
        } => {
            let (public_key, outcome) =
                import_keystore(&load_config(&config)?, &keystore, &password_file)?;
            let status = status(outcome);
            println!("{public_key} {status}");
        }
        KeysCommand::ImportShare(args) => {
            let imported =
                import_share(&load_config(&args.config)?, &args.package, &args.manifest)?;
            let status = status(imported.outcome);
            println!(
                "{} {status} share {}/{} threshold {} group {}",
                imported.public_key,
                imported.index,
                imported.participants,
                imported.threshold,
                imported.group_public_key
            );
        }
        KeysCommand::List { config } => {
            list_keys(&load_config(&config)?, &mut std::io::stdout().lock())?
        }
    }
    Ok(())
}

/// The word `keys import` and `keys import-share` print after the key.
fn status(outcome: InsertOutcome) -> &'static str {
    match outcome {
        InsertOutcome::Inserted => "imported",
        InsertOutcome::Duplicate => "duplicate",
        InsertOutcome::Reenabled => "imported (re-enabled)",
    }
}

/// `keys import`: decrypt an EIP-2335 keystore, seal the key in the HSM, store the sealed blob.
pub fn import_keystore(
    config: &Config,
    keystore_file: &Path,
    password_file: &Path,
) -> Result<(BlsPublicKey, InsertOutcome)> {
    let text = std::fs::read_to_string(keystore_file)
        .with_context(|| format!("reading keystore {}", keystore_file.display()))?;
    let keystore =
        keystore::parse(&text).with_context(|| format!("keystore {}", keystore_file.display()))?;
    let password = read_password_file(password_file)?;
    let secret = keystore::decrypt(&keystore, &password)
        .with_context(|| format!("decrypting keystore {}", keystore_file.display()))?;
    let store = crate::app::open_store(config)?;
    let sealer = crate::app::open_sealer(config)?;
    Ok(service::import_key(
        &store,
        sealer.as_ref(),
        &secret,
        ShareOrigin::Keystore,
        None,
    )?)
}

/// What `keys import-share` stored.
#[derive(Debug)]
pub struct ImportedShare {
    pub public_key: BlsPublicKey,
    pub index: ShareIndex,
    pub threshold: Threshold,
    pub participants: u32,
    pub group_public_key: BlsPublicKey,
    pub outcome: InsertOutcome,
}

/// `keys import-share`: check the package against its manifest, open it in this appliance's
/// HSM, check the share against the commitments, seal it under the sealing key and store it.
/// The plaintext share exists only in memory.
pub fn import_share(
    config: &Config,
    package_path: &Path,
    manifest_path: &Path,
) -> Result<ImportedShare> {
    import_share_using(
        config,
        package_path,
        manifest_path,
        &|checked| crate::app::open_share_package(config, checked),
        &|| open_sealer(config),
    )
}

/// [`import_share`] with the HSM parts supplied by the caller (tests: the mock YubiHSM2 through
/// `app::open_share_package_with_key` and `app::open_sealer_with`).
pub fn import_share_using(
    config: &Config,
    package_path: &Path,
    manifest_path: &Path,
    open_package: &dyn Fn(&CheckedPackage) -> Result<SecretShare>,
    open_sealer: &dyn Fn() -> Result<std::sync::Arc<dyn Sealer>>,
) -> Result<ImportedShare> {
    let expected = load_manifest(manifest_path)?;
    let package: SharePackage = read_json(package_path, "share package")?;
    let checked = package
        .check(Some(&expected))
        .with_context(|| format!("share package {}", package_path.display()))?;
    let share = open_package(&checked)
        .with_context(|| format!("opening share package {}", package_path.display()))?;
    let manifest = &checked.manifest;
    let info = ThresholdInfo {
        index: share.index(),
        threshold: manifest.threshold(),
        participants: manifest.participants(),
        group_public_key: manifest.group_public_key(),
        share_public_keys: manifest.share_public_keys().into_values().collect(),
    };
    // With the configured watermark for keys installed without slashing history.
    let store = crate::app::open_store(config)?;
    let sealer = open_sealer()?;
    let (public_key, outcome) = service::import_key(
        &store,
        sealer.as_ref(),
        share.secret_key(),
        ShareOrigin::Split,
        Some(info),
    )?;
    Ok(ImportedShare {
        public_key,
        index: share.index(),
        threshold: manifest.threshold(),
        participants: manifest.participants(),
        group_public_key: manifest.group_public_key(),
        outcome,
    })
}

/// `keys list`: one line per stored key (no HSM access needed).
pub fn list_keys(config: &Config, out: &mut dyn Write) -> Result<()> {
    let store = crate::app::open_store(config)?;
    for record in store.shares()? {
        let state = if record.enabled { "active" } else { "deleted" };
        match &record.threshold {
            Some(t) => writeln!(
                out,
                "{} {} share {}/{} threshold {} group {} {}",
                record.public_key,
                state,
                t.index,
                t.participants,
                t.threshold,
                t.group_public_key,
                record.origin.as_str()
            )?,
            None => writeln!(
                out,
                "{} {} {}",
                record.public_key,
                state,
                record.origin.as_str()
            )?,
        }
    }
    Ok(())
}
