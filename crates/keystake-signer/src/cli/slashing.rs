//! `keystake-signer slashing import|export`: move EIP-3076 slashing-protection history in and
//! out of the appliance, and the store options the configuration selects.
//!
//! Import is atomic and may run while `serve` is running (SQLite serialises it with the
//! signer's writer; the new watermarks apply to the next request). Export writes the complete
//! form by default (`--minimal` for one entry per key and kind) to a temporary file that is
//! synced and then renamed, so a crash never leaves half a file under the requested name.
//! Refuses: files for another network, other format versions, malformed JSON, and public keys
//! on the command line that are not 0x-prefixed 48-byte hex.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::store::{ImportSummary, Store, StoreOptions};
use keystake_core::slashing::interchange::Interchange;
use keystake_core::slashing::Watermark;
use keystake_core::types::{BlsPublicKey, Epoch, Slot};

/// The store options `signer.toml` selects (`[slashing]`).
pub fn store_options(config: &Config) -> StoreOptions {
    let epoch = config.slashing.new_key_min_epoch.map(Epoch);
    StoreOptions {
        new_key_watermark: Watermark {
            block_slot: config.slashing.new_key_min_slot.map(Slot),
            attestation_source: epoch,
            attestation_target: epoch,
        },
        ..StoreOptions::default()
    }
}

/// Open the appliance database with the configured options.
pub fn open_store(config: &Config) -> Result<Store> {
    let path = config.database_path();
    Store::open_with(&path, store_options(config)).with_context(|| {
        format!(
            "opening the slashing-protection database {}",
            path.display()
        )
    })
}

/// `slashing import`: the whole file (or the chosen keys' part of it) or nothing.
pub fn import(config: &Config, file: &Path, only: &[BlsPublicKey]) -> Result<ImportSummary> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading interchange file {}", file.display()))?;
    let interchange = Interchange::from_json(&text)
        .with_context(|| format!("interchange file {}", file.display()))?;
    let store = open_store(config)?;
    let only = (!only.is_empty()).then_some(only);
    store
        .import_interchange(&interchange, only)
        .with_context(|| format!("importing {}", file.display()))
}

/// `slashing export`: write the history of the chosen keys (all when empty) to `out` (`-` for
/// standard output). Returns the number of keys written.
pub fn export(config: &Config, keys: &[BlsPublicKey], out: &Path, minimal: bool) -> Result<usize> {
    let store = open_store(config)?;
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
        write_atomically(out, text.as_bytes())?;
    }
    Ok(interchange.data.len())
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut temporary_name = file_name.to_owned();
    temporary_name.push(".partial");
    let temporary = path.with_file_name(temporary_name);
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))?;
    Ok(())
}
