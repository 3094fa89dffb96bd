//! `keystake-signer combine`: combine t partial signatures from the appliances of a threshold
//! cluster into the group signature and print it (`0x…`). The group key, threshold and share
//! keys come from a cluster manifest or from `--share-pubkey`/`--group-pubkey`/`--threshold`;
//! the signing root from `--signing-root` or from the sign request (`--request`). Partials that
//! do not verify are left out with a warning naming their shares.
//!
//! Refuses: partials in any other form than `<index>:0x<signature>`; fewer than `t` distinct
//! partials, or fewer than `t` that verify (naming the culprits); a manifest that does not
//! verify; explicit share keys that are given twice or do not interpolate to the group key; a
//! request that does not parse for the network.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::manifest::load_manifest;
use keystake_core::consensus::Network;
use keystake_core::request;
use keystake_core::threshold::{self, Combined, ThresholdError};
use keystake_core::types::{BlsPublicKey, BlsSignature, Root, ShareIndex, Threshold};

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

pub fn run(args: CombineArgs) -> Result<()> {
    let combined = combine(&args)?;
    if !combined.culprits.is_empty() {
        eprintln!(
            "warning: partial signatures that do not verify were left out; culprits: {}",
            join_indices(&combined.culprits)
        );
    }
    println!("{}", combined.signature);
    Ok(())
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
        &mut rand::rngs::OsRng,
    )
    .map_err(|source| CombineFailure { source }.into())
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
