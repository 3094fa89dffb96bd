//! `keystake-signer split`: the trusted dealer (docs/threshold.md). Decrypt a keystore, split
//! the validator key t-of-n, write the cluster manifest (`manifest.json`) and one package per
//! appliance (`share-<i>.pkg`, encrypted to that appliance's enrolment key), and print what was
//! written. Everything is computed before the first file is written. The dealer's secrets (the
//! validator key, the polynomial, the shares) live only in zeroizing types and are dropped as
//! soon as the packages exist.
//!
//! Refuses: a threshold of 0 or above the number of enrolment keys; enrolment key files that do
//! not parse; an output file that exists (never overwritten); a keystore that does not parse or
//! decrypt with the password file.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::read_password_file;
use crate::files;
use crate::hsm::enrolment;
use keystake_core::keystore;
use keystake_core::manifest::{EnrolmentPublicKey, Manifest, SharePackage, VerifiedManifest};
use keystake_core::threshold;
use keystake_core::types::{BlsPublicKey, Threshold};

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

pub fn run(args: SplitArgs) -> Result<()> {
    print!("{}", describe_split(&split(&args)?));
    Ok(())
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
    write_new_json(&manifest_path, manifest.manifest(), files::PUBLIC_FILE_MODE)?;
    for (package, path) in packages.iter().zip(&package_paths) {
        write_new_json(path, package, files::PRIVATE_FILE_MODE)?;
    }
    Ok(SplitOutcome {
        manifest_path,
        manifest,
        packages: package_paths,
    })
}

/// `value` as pretty JSON with a final line break, in a file created with `mode` (never
/// overwritten) and synced.
fn write_new_json(path: &Path, value: &impl serde::Serialize, mode: u32) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    files::write_file(path, text.as_bytes(), mode, files::Overwrite::Refuse)?;
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
    text.push_str(&super::manifest::describe_bounds(
        manifest.threshold(),
        manifest.participants(),
    ));
    text
}
