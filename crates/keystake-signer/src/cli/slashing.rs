//! `keystake-signer slashing import|export|verify|prune`: move EIP-3076 slashing-protection
//! history in and out of the appliance (docs/slashing.md), check the database after a storage
//! fault, and remove old attestations so the history stops growing.
//!
//! `verify` opens the database the way `serve` does — `PRAGMA integrity_check` (every index
//! against its table), schema version — and prints what it holds; it exits non-zero, naming the
//! damage, on a database `serve` would refuse. It is the operator's step after a fault latched
//! the signer (issue 17): verify, then restart.
//!
//! Import is atomic and may run while `serve` is running (SQLite serialises it with the
//! signer's writer; the new watermarks apply to the next request). Export writes the complete
//! form by default (`--minimal` for one entry per key and kind) to a temporary file that is
//! synced and then renamed, so a crash never leaves half a file under the requested name.
//! `prune` keeps each key's newest `--keep-epochs` epochs of attestations and removes the rest,
//! raising the key's watermark over them in the same transaction (`store::prune`): nothing
//! refused before is signed after. It may run while `serve` is running, in transactions short
//! enough that the signer's writer hardly waits; `--dry-run` only counts.
//! Refuses: files for another network, other format versions, malformed JSON, and public keys
//! on the command line that are not 0x-prefixed 48-byte hex.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::store::ImportSummary;
use keystake_core::slashing::interchange::Interchange;
use keystake_core::types::BlsPublicKey;

/// `keystake-signer slashing …`.
#[derive(Debug, clap::Subcommand)]
pub enum SlashingCommand {
    /// Import an interchange file atomically (whole file or nothing); raises each key's watermark.
    Import {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        file: PathBuf,
        /// Import only these keys' history (repeatable; default: every key in the file).
        #[arg(long = "pubkey")]
        pubkeys: Vec<BlsPublicKey>,
    },
    /// Export the history (complete form) of all keys or the chosen ones.
    Export {
        #[arg(long)]
        config: PathBuf,
        /// Export only these keys (repeatable; default: every key the database knows).
        #[arg(long = "pubkey")]
        pubkeys: Vec<BlsPublicKey>,
        /// Output file (`-` for standard output).
        #[arg(long)]
        out: PathBuf,
        /// Minimal form: per key one block and one attestation at the maxima, without roots.
        #[arg(long)]
        minimal: bool,
    },
    /// Check the database as `serve` does at start (integrity of every table and index, schema)
    /// and print what it holds. Run it after a storage fault stopped signing, before restarting.
    Verify {
        #[arg(long)]
        config: PathBuf,
    },
    /// Remove each key's attestations older than its newest --keep-epochs epochs, raising its
    /// watermark over them: nothing refused before is signed after; an identical re-request of
    /// a removed attestation is refused instead of answered again. Safe while `serve` runs.
    Prune {
        #[arg(long)]
        config: PathBuf,
        /// Epochs kept below each key's newest attestation target (225 a day; 0 keeps only the
        /// newest target).
        #[arg(long)]
        keep_epochs: u64,
        /// Count what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Neither needs the HSM: the configuration is loaded without preparing it.
pub fn run(command: SlashingCommand) -> Result<()> {
    match command {
        SlashingCommand::Import {
            config,
            file,
            pubkeys,
        } => {
            let summary = import(&Config::load(&config)?, &file, &pubkeys)?;
            println!(
                "imported {} validators ({} blocks, {} attestations; {} duplicates skipped, {} validators not chosen)",
                summary.validators,
                summary.blocks_imported,
                summary.attestations_imported,
                summary.duplicates_skipped,
                summary.validators_skipped
            );
        }
        SlashingCommand::Export {
            config,
            pubkeys,
            out,
            minimal,
        } => {
            let count = export(&Config::load(&config)?, &pubkeys, &out, minimal)?;
            if out != Path::new("-") {
                println!("exported {count} validators to {}", out.display());
            }
        }
        SlashingCommand::Prune {
            config,
            keep_epochs,
            dry_run,
        } => {
            let store = crate::app::open_store(&Config::load(&config)?)?;
            let summary = store
                .prune_attestations(keep_epochs, dry_run)
                .context("pruning the slashing history")?;
            if dry_run {
                println!(
                    "dry run: would remove {} attestations of {} validators (keeping each key's newest {keep_epochs} epochs); nothing changed",
                    summary.attestations, summary.validators
                );
            } else {
                println!(
                    "removed {} attestations of {} validators (kept each key's newest {keep_epochs} epochs; their watermarks now cover what was removed; {} transactions)",
                    summary.attestations, summary.validators, summary.transactions
                );
            }
        }
        SlashingCommand::Verify { config } => {
            let config = Config::load(&config)?;
            let store = crate::app::open_store(&config)?;
            let counts = store.record_counts()?;
            println!(
                "database {} OK (integrity_check passed): {} validators, {} blocks, {} attestations",
                store.path().display(),
                counts.validators,
                counts.blocks,
                counts.attestations
            );
        }
    }
    Ok(())
}

/// `slashing import`: the whole file (or the chosen keys' part of it) or nothing.
pub fn import(config: &Config, file: &Path, only: &[BlsPublicKey]) -> Result<ImportSummary> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading interchange file {}", file.display()))?;
    let interchange = Interchange::from_json(&text)
        .with_context(|| format!("interchange file {}", file.display()))?;
    let store = crate::app::open_store(config)?;
    let only = (!only.is_empty()).then_some(only);
    store
        .import_interchange(&interchange, only)
        .with_context(|| format!("importing {}", file.display()))
}

/// `slashing export`: write the history of the chosen keys (all when empty) to `out` (`-` for
/// standard output). Returns the number of keys written.
pub fn export(config: &Config, keys: &[BlsPublicKey], out: &Path, minimal: bool) -> Result<usize> {
    let store = crate::app::open_store(config)?;
    let keys = (!keys.is_empty()).then_some(keys);
    let mut interchange = store.export_interchange(keys)?;
    if minimal {
        interchange = interchange.minified();
    }
    let mut text = interchange.to_json();
    text.push('\n');
    if out == Path::new("-") {
        std::io::stdout().lock().write_all(text.as_bytes())?;
    } else {
        crate::files::write_file(
            out,
            text.as_bytes(),
            crate::files::PUBLIC_FILE_MODE,
            crate::files::Overwrite::Replace,
        )?;
    }
    Ok(interchange.data.len())
}
