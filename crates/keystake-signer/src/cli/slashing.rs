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
use crate::store::ImportSummary;
use keystake_core::slashing::interchange::Interchange;
use keystake_core::types::BlsPublicKey;

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
