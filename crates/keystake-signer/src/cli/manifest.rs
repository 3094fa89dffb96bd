//! `keystake-signer manifest verify --manifest FILE`: check a cluster manifest from `split` —
//! the share public keys match the Feldman commitments and interpolate to the group key — and
//! print a summary (threshold, group key, hash, one line per share and its operator) and the
//! committee's safety bounds (theft, liveness, slashing; a warning when no malicious operator is
//! tolerated against slashing).
//!
//! Refuses: a manifest that cannot be read, is not valid JSON of the manifest form (naming the
//! field at fault), or does not verify.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::read_json;
use keystake_core::manifest::{Manifest, VerifiedManifest};
use keystake_core::threshold::SafetyBounds;
use keystake_core::types::Threshold;

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
    text.push_str(&describe_bounds(
        manifest.threshold(),
        manifest.participants(),
    ));
    text
}

/// The safety bounds of a `t`-of-`n` committee as printed by `split`, `manifest verify` and the
/// DKG definitions, followed by the warning when it tolerates no malicious operator against
/// slashing (docs/threshold.md, "Safety bounds").
pub fn describe_bounds(t: Threshold, n: u32) -> String {
    match SafetyBounds::for_committee(t, n) {
        Ok(bounds) => {
            let mut text = format!("{bounds}\n");
            if let Some(warning) = bounds.warning() {
                text.push_str(&warning);
                text.push('\n');
            }
            text
        }
        // A verified manifest or a split always has 1 ≤ t ≤ n ≤ MAX_SHARES.
        Err(error) => format!("safety bounds unavailable: {error}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_warn_when_no_malicious_operator_is_tolerated() {
        let t = |t| Threshold::new(t).unwrap();
        let two_of_three = describe_bounds(t(2), 3);
        assert!(two_of_three.contains("WARNING: 2-of-3 tolerates no malicious operator"));
        let two_of_four = describe_bounds(t(2), 4);
        assert!(two_of_four.contains("not slashing-safe even with every operator honest"));
        assert!(!describe_bounds(t(3), 4).contains("WARNING"));
    }
}
