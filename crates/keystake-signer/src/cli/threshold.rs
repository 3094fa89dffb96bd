//! Threshold commands (docs/threshold.md): `enrolment show`, `split`, `keys import-share`,
//! `combine` and `manifest verify`. The binary parses the arguments (the `clap` structs are
//! here so `main.rs` only wires them in) and prints what these functions return.
//!
//! Refuses: a threshold of 0 or above the number of enrolment keys; an output file that exists
//! (never overwritten); a package for another appliance, tampered, or not matching the manifest;
//! partials in any other form than `<index>:0x<signature>`; fewer than `t` distinct partials, or
//! fewer than `t` that verify (naming the culprits); explicit share keys that do not interpolate
//! to the group key. The dealer's secrets (the validator key, the polynomial, the shares) live
//! only in zeroizing types and are dropped as soon as the packages exist.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::read_password_file;
use crate::app::open_sealer;
use crate::config::Config;
use crate::hsm::enrolment;
use crate::service;
use crate::store::{InsertOutcome, ShareOrigin, ThresholdInfo};
use keystake_core::consensus::Network;
use keystake_core::manifest::{EnrolmentPublicKey, Manifest, SharePackage, VerifiedManifest};
use keystake_core::threshold::{self, Combined, ThresholdError};
use keystake_core::types::{BlsPublicKey, BlsSignature, Root, ShareIndex, Threshold};
use keystake_core::{keystore, request};

/// `keystake-signer split`.
#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// EIP-2335 keystore of the validator key to split.
    #[arg(long)]
    pub keystore: PathBuf,
    /// File holding the keystore password.
    #[arg(long)]
    pub password_file: PathBuf,
    /// Number of shares needed to sign (t).
    #[arg(long)]
    pub threshold: u32,
    /// Enrolment public key file of an operator appliance (`enrolment show` output); repeat once
    /// per appliance. Share i goes to the i-th key given.
    #[arg(long = "enrolment-key", required = true, value_name = "FILE")]
    pub enrolment_keys: Vec<PathBuf>,
    /// Output directory for manifest.json and share-<i>.pkg (created; existing files are never
    /// overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

/// `keystake-signer keys import-share`.
#[derive(Debug, clap::Args)]
pub struct ImportShareArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// The share package (`share-<i>.pkg`) made for this appliance.
    #[arg(long)]
    pub package: PathBuf,
    /// The cluster manifest the package must have been made with (optional: the package
    /// carries its manifest; giving it pins which one).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

/// `keystake-signer combine`.
#[derive(Debug, clap::Args)]
pub struct CombineArgs {
    /// Cluster manifest (group key, threshold, share public keys).
    #[arg(long, conflicts_with_all = ["share_pubkeys", "group_pubkey", "threshold"])]
    pub manifest: Option<PathBuf>,
    /// Instead of a manifest: a share public key, repeatable.
    #[arg(long = "share-pubkey", value_name = "INDEX:0xPUBKEY")]
    pub share_pubkeys: Vec<String>,
    /// Instead of a manifest: the group (validator) public key.
    #[arg(long, requires = "threshold")]
    pub group_pubkey: Option<BlsPublicKey>,
    /// Instead of a manifest: the threshold t.
    #[arg(long, requires = "group_pubkey")]
    pub threshold: Option<u32>,
    /// A partial signature from share INDEX, repeatable (at least t distinct indices).
    #[arg(long = "partial", required = true, value_name = "INDEX:0xSIGNATURE")]
    pub partials: Vec<String>,
    /// The signing root the partials signed (what the appliances computed from the request).
    #[arg(long, required_unless_present = "request", conflicts_with = "request")]
    pub signing_root: Option<Root>,
    /// Instead of --signing-root: the Web3Signer sign request body sent to the appliances.
    #[arg(long)]
    pub request: Option<PathBuf>,
    /// Network whose fork schedule computes the signing root of --request.
    #[arg(long, default_value = "mainnet", requires = "request")]
    pub network: String,
    /// Combine the first t partials and check only the result; verify each partial only when
    /// that fails. Default: verify every partial first.
    #[arg(long)]
    pub optimistic: bool,
}

/// `keystake-signer enrolment …`.
#[derive(Debug, clap::Subcommand)]
pub enum EnrolmentCommand {
    /// Print this appliance's enrolment public key (one line; give the file to `split`).
    Show {
        #[arg(long)]
        config: PathBuf,
    },
}

/// `keystake-signer manifest …`.
#[derive(Debug, clap::Subcommand)]
pub enum ManifestCommand {
    /// Check that the share keys match the Feldman commitments and interpolate to the group key.
    Verify {
        #[arg(long)]
        manifest: PathBuf,
    },
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut deserializer)
        .with_context(|| format!("{what} {} is not valid", path.display()))
}

/// Read and verify a cluster manifest.
pub fn load_manifest(path: &Path) -> Result<VerifiedManifest> {
    let manifest: Manifest = read_json(path, "manifest")?;
    manifest
        .verify()
        .with_context(|| format!("manifest {} does not verify", path.display()))
}

/// `enrolment show`: the enrolment public key line.
pub fn enrolment_show(config: &Config) -> Result<EnrolmentPublicKey> {
    crate::app::enrolment_public_key(config)
}

/// What `split` wrote.
#[derive(Debug)]
pub struct SplitOutcome {
    pub manifest_path: PathBuf,
    pub manifest: VerifiedManifest,
    pub packages: Vec<PathBuf>,
}

/// `split`: decrypt the keystore, draw the polynomial, write the manifest and one package per
/// enrolment key. Everything is computed before the first file is written.
pub fn split(args: &SplitArgs) -> Result<SplitOutcome> {
    let operators = args
        .enrolment_keys
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading enrolment key {}", path.display()))?;
            text.parse::<EnrolmentPublicKey>()
                .with_context(|| format!("enrolment key {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let n = u32::try_from(operators.len()).context("too many enrolment keys")?;
    let t = Threshold::new(args.threshold).context("--threshold must be at least 1")?;
    if t.get() > n {
        bail!(
            "--threshold {t} is more than the {n} enrolment keys given: the key could never sign"
        );
    }
    let manifest_path = args.out.join("manifest.json");
    let package_paths: Vec<PathBuf> = (1..=n)
        .map(|i| args.out.join(format!("share-{i}.pkg")))
        .collect();
    for path in std::iter::once(&manifest_path).chain(&package_paths) {
        if path.exists() {
            bail!("{} exists; refusing to overwrite a split", path.display());
        }
    }

    let text = std::fs::read_to_string(&args.keystore)
        .with_context(|| format!("reading keystore {}", args.keystore.display()))?;
    let keystore =
        keystore::parse(&text).with_context(|| format!("keystore {}", args.keystore.display()))?;
    let password = read_password_file(&args.password_file)?;
    let secret = keystore::decrypt(&keystore, &password)
        .with_context(|| format!("decrypting keystore {}", args.keystore.display()))?;
    drop(password);
    let dealt = threshold::split(&secret, t, n, &mut rand::rngs::OsRng)?;
    // The validator key is no longer needed: wipe it before anything is encrypted or written.
    let group_public_key = secret.public_key();
    drop(secret);
    let share_public_keys: Vec<BlsPublicKey> = dealt
        .shares
        .iter()
        .map(|share| share.public_key())
        .collect();
    let manifest = Manifest::for_split(dealt.commitments.clone(), &share_public_keys, &operators)?;
    if manifest.group_public_key() != group_public_key {
        bail!("internal error: the commitments do not commit to the validator key");
    }
    let packages = dealt
        .shares
        .iter()
        .zip(&operators)
        .map(|(share, operator)| enrolment::seal_package(share, &manifest, operator))
        .collect::<Result<Vec<SharePackage>, _>>()?;
    // The shares are wiped here (SecretShare zeroizes on drop); only ciphertext remains.
    drop(dealt);

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut manifest_text = serde_json::to_string_pretty(manifest.manifest())?;
    manifest_text.push('\n');
    write_new_file(&manifest_path, manifest_text.as_bytes())?;
    for (package, path) in packages.iter().zip(&package_paths) {
        let mut text = serde_json::to_string_pretty(package)?;
        text.push('\n');
        crate::files::write_file(
            path,
            text.as_bytes(),
            crate::files::PRIVATE_FILE_MODE,
            crate::files::Overwrite::Refuse,
        )?;
    }
    Ok(SplitOutcome {
        manifest_path,
        manifest,
        packages: package_paths,
    })
}

/// A public file, created (never overwritten) and synced.
fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    crate::files::write_file(
        path,
        contents,
        crate::files::PUBLIC_FILE_MODE,
        crate::files::Overwrite::Refuse,
    )?;
    Ok(())
}

/// The text `split` prints.
pub fn describe_split(outcome: &SplitOutcome) -> String {
    let manifest = &outcome.manifest;
    let mut text = format!(
        "split {} into {}-of-{} shares\nmanifest {} (sha256 {})\n",
        manifest.group_public_key(),
        manifest.threshold(),
        manifest.participants(),
        outcome.manifest_path.display(),
        manifest.hash()
    );
    for (share, path) in manifest.manifest().shares.iter().zip(&outcome.packages) {
        let _ = writeln!(
            text,
            "share {} {} -> {} for enrolment key {}",
            share.index,
            share.public_key,
            path.display(),
            share.operator.fingerprint
        );
    }
    text
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
    manifest_path: Option<&Path>,
) -> Result<ImportedShare> {
    let expected = manifest_path.map(load_manifest).transpose()?;
    let package: SharePackage = read_json(package_path, "share package")?;
    let checked = package
        .check(expected.as_ref())
        .with_context(|| format!("share package {}", package_path.display()))?;
    let share = crate::app::open_share_package(config, &checked)
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
    let sealer = open_sealer(config)?;
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

/// Why `combine` produced no signature: the threshold error, with its culprits spelt out.
#[derive(Debug, thiserror::Error)]
#[error("{source}{}", culprit_suffix(.source.culprits()))]
pub struct CombineFailure {
    pub source: ThresholdError,
}

fn culprit_suffix(culprits: &[ShareIndex]) -> String {
    if culprits.is_empty() {
        String::new()
    } else {
        format!("; culprits: {}", join_indices(culprits))
    }
}

/// `2, 4` — how culprit indices are printed.
pub fn join_indices(indices: &[ShareIndex]) -> String {
    indices
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parse `<index>:<value>` as used by `--partial` and `--share-pubkey`.
fn parse_indexed<T: std::str::FromStr>(text: &str, what: &str) -> Result<(ShareIndex, T)>
where
    T::Err: std::fmt::Display,
{
    let (index, value) = text
        .split_once(':')
        .with_context(|| format!("{what} {text:?}: expected <index>:0x<hex>"))?;
    let index: u32 = index
        .trim()
        .parse()
        .with_context(|| format!("{what} {text:?}: index is not a number"))?;
    let index = ShareIndex::new(index)
        .map_err(|_| anyhow::anyhow!("{what} {text:?}: share indices start at 1"))?;
    let value = value
        .trim()
        .parse::<T>()
        .map_err(|e| anyhow::anyhow!("{what} {text:?}: {e}"))?;
    Ok((index, value))
}

/// `combine`: the group signature, with the shares whose partials were set aside.
pub fn combine(args: &CombineArgs) -> Result<Combined> {
    let (t, share_public_keys, group_public_key) = match &args.manifest {
        Some(path) => {
            let manifest = load_manifest(path)?;
            (
                manifest.threshold(),
                manifest.share_public_keys(),
                manifest.group_public_key(),
            )
        }
        None => {
            let (Some(group), Some(t)) = (args.group_pubkey, args.threshold) else {
                bail!("give --manifest, or --share-pubkey (repeated) with --group-pubkey and --threshold");
            };
            let t = Threshold::new(t).context("--threshold must be at least 1")?;
            let mut keys = BTreeMap::new();
            for text in &args.share_pubkeys {
                let (index, key) = parse_indexed::<BlsPublicKey>(text, "--share-pubkey")?;
                if keys.insert(index, key).is_some() {
                    bail!("--share-pubkey: share {index} is given twice");
                }
            }
            keystake_core::manifest::verify_share_public_keys(&keys, t, &group)
                .context("the share public keys do not belong to the group key")?;
            (t, keys, group)
        }
    };
    let partials = args
        .partials
        .iter()
        .map(|text| parse_indexed::<BlsSignature>(text, "--partial"))
        .collect::<Result<Vec<_>>>()?;
    let signing_root = match (&args.signing_root, &args.request) {
        (Some(root), _) => *root,
        (None, Some(path)) => {
            let network = Network::by_name(&args.network)
                .with_context(|| format!("unknown network {:?}", args.network))?;
            let body = std::fs::read(path)
                .with_context(|| format!("reading request {}", path.display()))?;
            request::parse_sign_request(&body, &network)
                .with_context(|| format!("request {}", path.display()))?
                .signing_root
        }
        (None, None) => bail!("give --signing-root or --request"),
    };
    threshold::combine(
        t,
        &share_public_keys,
        &group_public_key,
        signing_root.as_bytes(),
        &partials,
        !args.optimistic,
    )
    .map_err(|source| CombineFailure { source }.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexed_arguments_are_parsed_strictly() {
        let sig = format!("0x{}", "00".repeat(96));
        let (index, _) = parse_indexed::<BlsSignature>(&format!("3:{sig}"), "--partial").unwrap();
        assert_eq!(index.get(), 3);
        for bad in [
            sig.clone(),
            format!("0:{sig}"),
            format!("x:{sig}"),
            format!("3:{}", &sig[..50]),
            "3:".to_owned(),
        ] {
            assert!(
                parse_indexed::<BlsSignature>(&bad, "--partial").is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn failures_name_their_culprits() {
        let failure = CombineFailure {
            source: ThresholdError::NotEnoughValidPartials {
                needed: 3,
                valid: 2,
                culprits: vec![ShareIndex::new(2).unwrap(), ShareIndex::new(4).unwrap()],
            },
        };
        assert!(
            failure.to_string().ends_with("; culprits: 2, 4"),
            "{failure}"
        );
        let plain = CombineFailure {
            source: ThresholdError::NotEnoughPartials { needed: 3, got: 2 },
        };
        assert!(!plain.to_string().contains("culprits"));
    }
}
