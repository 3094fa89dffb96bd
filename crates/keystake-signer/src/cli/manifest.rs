//! `keystake-signer manifest verify --manifest FILE`: check a cluster manifest from `split` —
//! the share public keys match the Feldman commitments and interpolate to the group key — and
//! print a summary (threshold, group key, hash, one line per share and its operator).
//!
//! Refuses: a manifest that cannot be read, is not valid JSON of the manifest form (naming the
//! field at fault), or does not verify.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::read_json;
use keystake_core::manifest::{Manifest, VerifiedManifest};

/// `keystake-signer manifest …`.
#[derive(Debug, clap::Subcommand)]
pub enum ManifestCommand {
    /// Check that the share keys match the Feldman commitments and interpolate to the group key.
    Verify {
        #[arg(long)]
        manifest: PathBuf,
    },
}

pub fn run(command: ManifestCommand) -> Result<()> {
    match command {
        ManifestCommand::Verify { manifest } => {
            print!("{}", describe_manifest(&load_manifest(&manifest)?));
        }
    }
    Ok(())
}

/// Read and verify a cluster manifest.
pub fn load_manifest(path: &Path) -> Result<VerifiedManifest> {
    let manifest: Manifest = read_json(path, "manifest")?;
    manifest
        .verify()
        .with_context(|| format!("manifest {} does not verify", path.display()))
}

/// `manifest verify`: a human-readable summary of a manifest that verified.
pub fn describe_manifest(manifest: &VerifiedManifest) -> String {
    let mut text = format!(
        "manifest OK: {}-of-{} group {} sha256 {}\n",
        manifest.threshold(),
        manifest.participants(),
        manifest.group_public_key(),
        manifest.hash()
    );
    for share in &manifest.manifest().shares {
        let _ = writeln!(
            text,
            "share {} {} operator {}",
            share.index, share.public_key, share.operator.fingerprint
        );
    }
    text
}
