//! The public description of a distributed validator cluster as the threshold forwarder sees it
//! (`keystake-signer connect --cluster`): which group keys exist, their share public keys by index,
//! the threshold, and which share index each configured appliance holds.
//!
//! Sources: trusted-split `manifest.json` files (verified in full by [`Manifest::verify`]) and DKG
//! `lock.json` files, of which only the fields the cluster needs are read — top-level `threshold`,
//! `validators[].group_public_key` and `validators[].public_shares` (share `i` at position `i−1`);
//! every other field of a lock file is ignored here (the DKG tooling owns and checks them). A
//! lock's share keys must interpolate to its group key (they lie on one polynomial of degree
//! `t−1`), so a lock whose share list was edited is refused.
//!
//! [`ClusterPlan::new`] refuses: sources that disagree on the threshold or on the set of share
//! indices; a group key given twice; an appliance index that no source has; two appliances for
//! one index; fewer than `t` appliances; no validator at all. Pure: no file is read here.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::manifest::{self, Manifest, ManifestError};
use crate::types::{BlsPublicKey, ShareIndex, Threshold};

/// Largest lock/manifest text accepted (a lock for thousands of validators fits).
pub const MAX_SOURCE_BYTES: usize = 64 * 1024 * 1024;

/// One validator of the cluster: its group key, threshold and share public keys by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterValidator {
    pub group_public_key: BlsPublicKey,
    pub threshold: Threshold,
    pub share_public_keys: BTreeMap<ShareIndex, BlsPublicKey>,
}

/// Why a cluster description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("{source_name}: larger than {MAX_SOURCE_BYTES} bytes")]
    TooLarge { source_name: String },
    #[error("{source_name}: not JSON: {detail}")]
    NotJson { source_name: String, detail: String },
    #[error(
        "{source_name}: neither a cluster manifest (\"format\") nor a DKG lock (\"validators\")"
    )]
    UnknownKind { source_name: String },
    #[error("{source_name}: invalid manifest: {detail}")]
    InvalidManifest { source_name: String, detail: String },
    #[error("{source_name}: invalid lock: {detail}")]
    InvalidLock { source_name: String, detail: String },
    #[error("{source_name}: validator {position} of the lock: {detail}")]
    InvalidLockValidator {
        source_name: String,
        position: usize,
        detail: String,
    },
    #[error("{source_name} has threshold {found}, {first_source} has {expected}; every manifest must agree")]
    ThresholdMismatch {
        source_name: String,
        found: u32,
        first_source: String,
        expected: u32,
    },
    #[error("{source_name} has share indices {found:?}, {first_source} has {expected:?}; every manifest must agree")]
    IndicesMismatch {
        source_name: String,
        found: Vec<u32>,
        first_source: String,
        expected: Vec<u32>,
    },
    #[error("group key {0} is given more than once")]
    DuplicateGroupKey(BlsPublicKey),
    #[error("no validator: the cluster names no manifest, or the manifests list none")]
    NoValidators,
    #[error("appliance index {0} is not a share index of the manifests ({1:?})")]
    UnknownIndex(u32, Vec<u32>),
    #[error("share index {0} has more than one appliance; one appliance per index")]
    DuplicateAppliance(u32),
    #[error("{appliances} appliances for threshold {t}: at least t are needed to sign")]
    TooFewAppliances { appliances: usize, t: u32 },
}

/// The fields of a DKG `lock.json` this crate reads (all others ignored).
#[derive(Deserialize)]
struct Lock {
    threshold: u32,
    validators: Vec<LockValidator>,
}

#[derive(Deserialize)]
struct LockValidator {
    group_public_key: BlsPublicKey,
    public_shares: Vec<BlsPublicKey>,
}

/// Read the validators of one manifest or lock file's text; `source_name` names it in errors.
pub fn parse_source(source_name: &str, text: &str) -> Result<Vec<ClusterValidator>, ClusterError> {
    let source_name = source_name.to_owned();
    if text.len() > MAX_SOURCE_BYTES {
        return Err(ClusterError::TooLarge { source_name });
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ClusterError::NotJson {
            source_name: source_name.clone(),
            detail: e.to_string(),
        })?;
    if value.get("format").is_some() {
        let invalid = |detail: String| ClusterError::InvalidManifest {
            source_name: source_name.clone(),
            detail,
        };
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        let verified = manifest.verify().map_err(|e| invalid(e.to_string()))?;
        return Ok(vec![ClusterValidator {
            group_public_key: verified.group_public_key(),
            threshold: verified.threshold(),
            share_public_keys: verified.share_public_keys(),
        }]);
    }
    if value.get("validators").is_none() {
        return Err(ClusterError::UnknownKind { source_name });
    }
    let lock: Lock = serde_json::from_value(value).map_err(|e| ClusterError::InvalidLock {
        source_name: source_name.clone(),
        detail: e.to_string(),
    })?;
    let threshold = Threshold::new(lock.threshold).map_err(|_| ClusterError::InvalidLock {
        source_name: source_name.clone(),
        detail: "threshold 0".to_owned(),
    })?;
    lock.validators
        .into_iter()
        .enumerate()
        .map(|(position, validator)| {
            lock_validator(threshold, validator).map_err(|error| {
                ClusterError::InvalidLockValidator {
                    source_name: source_name.clone(),
                    position,
                    detail: error.to_string(),
                }
            })
        })
        .collect()
}

fn lock_validator(
    threshold: Threshold,
    validator: LockValidator,
) -> Result<ClusterValidator, ManifestError> {
    let n = validator.public_shares.len();
    if threshold.get() as usize > n {
        return Err(ManifestError::InvalidThreshold {
            t: threshold.get(),
            n: u32::try_from(n).unwrap_or(u32::MAX),
        });
    }
    let share_public_keys: BTreeMap<ShareIndex, BlsPublicKey> = validator
        .public_shares
        .iter()
        .enumerate()
        .map(|(position, key)| {
            let index = u32::try_from(position + 1)
                .ok()
                .and_then(|i| ShareIndex::new(i).ok())
                .ok_or(ManifestError::InvalidThreshold {
                    t: threshold.get(),
                    n: u32::MAX,
                })?;
            Ok((index, *key))
        })
        .collect::<Result<_, ManifestError>>()?;
    manifest::verify_share_public_keys(&share_public_keys, threshold, &validator.group_public_key)?;
    Ok(ClusterValidator {
        group_public_key: validator.group_public_key,
        threshold,
        share_public_keys,
    })
}

/// A checked cluster: one threshold and one index set for every validator, and the appliances
/// (one per index, at least `t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    threshold: Threshold,
    indices: BTreeSet<ShareIndex>,
    validators: BTreeMap<BlsPublicKey, ClusterValidator>,
    appliances: BTreeSet<ShareIndex>,
}

impl ClusterPlan {
    /// Check `sources` (name, validators read from it) against each other and the appliance
    /// indices of the cluster file (see the module doc for what is refused).
    pub fn new(
        sources: &[(String, Vec<ClusterValidator>)],
        appliance_indices: &[ShareIndex],
    ) -> Result<Self, ClusterError> {
        let mut first: Option<(&str, Threshold, BTreeSet<ShareIndex>)> = None;
        let mut validators = BTreeMap::new();
        for (source_name, list) in sources {
            for validator in list {
                let indices: BTreeSet<ShareIndex> =
                    validator.share_public_keys.keys().copied().collect();
                match &first {
                    None => first = Some((source_name, validator.threshold, indices)),
                    Some((first_source, t, expected)) => {
                        if validator.threshold != *t {
                            return Err(ClusterError::ThresholdMismatch {
                                source_name: source_name.clone(),
                                found: validator.threshold.get(),
                                first_source: (*first_source).to_owned(),
                                expected: t.get(),
                            });
                        }
                        if indices != *expected {
                            return Err(ClusterError::IndicesMismatch {
                                source_name: source_name.clone(),
                                found: numbers(&indices),
                                first_source: (*first_source).to_owned(),
                                expected: numbers(expected),
                            });
                        }
                    }
                }
                if validators
                    .insert(validator.group_public_key, validator.clone())
                    .is_some()
                {
                    return Err(ClusterError::DuplicateGroupKey(validator.group_public_key));
                }
            }
        }
        let Some((_, threshold, indices)) = first else {
            return Err(ClusterError::NoValidators);
        };
        let mut appliances = BTreeSet::new();
        for index in appliance_indices {
            if !indices.contains(index) {
                return Err(ClusterError::UnknownIndex(index.get(), numbers(&indices)));
            }
            if !appliances.insert(*index) {
                return Err(ClusterError::DuplicateAppliance(index.get()));
            }
        }
        if appliances.len() < threshold.get() as usize {
            return Err(ClusterError::TooFewAppliances {
                appliances: appliances.len(),
                t: threshold.get(),
            });
        }
        Ok(ClusterPlan {
            threshold,
            indices,
            validators,
            appliances,
        })
    }

    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// `n`: the number of shares each validator has.
    pub fn participants(&self) -> usize {
        self.indices.len()
    }

    /// The share indices with a configured appliance.
    pub fn appliances(&self) -> &BTreeSet<ShareIndex> {
        &self.appliances
    }

    /// The validator with this group key.
    pub fn validator(&self, group_public_key: &BlsPublicKey) -> Option<&ClusterValidator> {
        self.validators.get(group_public_key)
    }

    /// Every validator, by group key.
    pub fn validators(&self) -> impl Iterator<Item = &ClusterValidator> {
        self.validators.values()
    }
}

fn numbers(indices: &BTreeSet<ShareIndex>) -> Vec<u32> {
    indices.iter().map(|i| i.get()).collect()
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::bls::SecretKey;
    use crate::manifest::EnrolmentPublicKey;
    use crate::threshold;

    fn idx(i: u32) -> ShareIndex {
        ShareIndex::new(i).unwrap()
    }

    fn split(seed: u64, t: u32, n: u32) -> (BlsPublicKey, Vec<BlsPublicKey>, threshold::Split) {
        let mut rng = StdRng::seed_from_u64(seed);
        let secret = SecretKey::random(&mut rng);
        let split = threshold::split(&secret, Threshold::new(t).unwrap(), n, &mut rng).unwrap();
        let shares = split.shares.iter().map(|s| s.public_key()).collect();
        (secret.public_key(), shares, split)
    }

    fn lock_text(t: u32, validators: &[(BlsPublicKey, Vec<BlsPublicKey>)]) -> String {
        let validators: Vec<serde_json::Value> = validators
            .iter()
            .map(|(group, shares)| {
                serde_json::json!({
                    "group_public_key": group,
                    "public_shares": shares,
                    "deposit_data": {"ignored": true},
                })
            })
            .collect();
        serde_json::json!({
            "format": null,
            "threshold": t,
            "participants": [{"endpoint": "https://ignored"}],
            "validators": validators,
        })
        .to_string()
        // A `format` key marks a manifest; the lock here has none.
        .replace("\"format\":null,", "")
    }

    fn manifest_text(seed: u64, t: u32, n: u32) -> (BlsPublicKey, String) {
        let (group, shares, split) = split(seed, t, n);
        let operators: Vec<EnrolmentPublicKey> = (0..n)
            .map(|i| {
                let mut bytes = [0u8; 65];
                bytes[0] = 4;
                bytes[1] = i as u8 + 1;
                bytes[2] = seed as u8;
                EnrolmentPublicKey::from_sec1(&bytes).unwrap()
            })
            .collect();
        let verified = Manifest::for_split(split.commitments, &shares, &operators).unwrap();
        (group, serde_json::to_string(verified.manifest()).unwrap())
    }

    #[test]
    fn manifests_and_locks_make_one_plan() {
        let (g1, m1) = manifest_text(1, 3, 4);
        let (g2, s2, _) = split(2, 3, 4);
        let (g3, s3, _) = split(3, 3, 4);
        let lock = lock_text(3, &[(g2, s2.clone()), (g3, s3)]);
        let sources = vec![
            (
                "manifest.json".to_owned(),
                parse_source("manifest.json", &m1).unwrap(),
            ),
            (
                "lock.json".to_owned(),
                parse_source("lock.json", &lock).unwrap(),
            ),
        ];
        let plan = ClusterPlan::new(&sources, &[idx(1), idx(2), idx(4)]).unwrap();
        assert_eq!(plan.threshold().get(), 3);
        assert_eq!(plan.participants(), 4);
        assert_eq!(plan.validators().count(), 3);
        assert_eq!(
            plan.validator(&g2).unwrap().share_public_keys[&idx(1)],
            s2[0]
        );
        assert!(plan.validator(&g1).is_some() && plan.validator(&g3).is_some());
    }

    #[test]
    fn disagreements_and_thin_clusters_are_refused() {
        let (_, m34) = manifest_text(1, 3, 4);
        let (_, m24) = manifest_text(2, 2, 4);
        let (_, m35) = manifest_text(3, 3, 5);
        let parsed = |name: &str, text: &str| (name.to_owned(), parse_source(name, text).unwrap());
        let all = [idx(1), idx(2), idx(3), idx(4)];
        let error = ClusterPlan::new(&[parsed("a", &m34), parsed("b", &m24)], &all).unwrap_err();
        assert!(
            matches!(
                error,
                ClusterError::ThresholdMismatch {
                    found: 2,
                    expected: 3,
                    ..
                }
            ),
            "{error}"
        );
        let error = ClusterPlan::new(&[parsed("a", &m34), parsed("c", &m35)], &all).unwrap_err();
        assert!(
            matches!(error, ClusterError::IndicesMismatch { .. }),
            "{error}"
        );
        let error = ClusterPlan::new(&[parsed("a", &m34), parsed("a2", &m34)], &all).unwrap_err();
        assert!(
            matches!(error, ClusterError::DuplicateGroupKey(_)),
            "{error}"
        );
        let error = ClusterPlan::new(&[parsed("a", &m34)], &[idx(1), idx(2)]).unwrap_err();
        assert_eq!(
            error,
            ClusterError::TooFewAppliances {
                appliances: 2,
                t: 3
            }
        );
        let error =
            ClusterPlan::new(&[parsed("a", &m34)], &[idx(1), idx(2), idx(2), idx(3)]).unwrap_err();
        assert_eq!(error, ClusterError::DuplicateAppliance(2));
        let error = ClusterPlan::new(&[parsed("a", &m34)], &[idx(1), idx(2), idx(5)]).unwrap_err();
        assert!(matches!(error, ClusterError::UnknownIndex(5, _)), "{error}");
        assert_eq!(
            ClusterPlan::new(&[], &all).unwrap_err(),
            ClusterError::NoValidators
        );
    }

    #[test]
    fn edited_locks_and_unknown_files_are_refused() {
        let (g, mut shares, _) = split(4, 3, 4);
        let (other, _, _) = split(5, 3, 4);
        shares[3] = other;
        let error = parse_source("lock.json", &lock_text(3, &[(g, shares.clone())])).unwrap_err();
        assert!(
            matches!(
                error,
                ClusterError::InvalidLockValidator { position: 0, .. }
            ),
            "{error}"
        );
        let error = parse_source("lock.json", &lock_text(5, &[(g, shares)])).unwrap_err();
        assert!(
            matches!(error, ClusterError::InvalidLockValidator { .. }),
            "{error}"
        );
        let error = parse_source("x.json", "{\"hello\": 1}").unwrap_err();
        assert!(matches!(error, ClusterError::UnknownKind { .. }), "{error}");
        let error = parse_source("x.json", "not json").unwrap_err();
        assert!(matches!(error, ClusterError::NotJson { .. }), "{error}");
        let (_, manifest) = manifest_text(6, 3, 4);
        let forged = manifest.replacen("\"threshold\":3", "\"threshold\":2", 1);
        let error = parse_source("m.json", &forged).unwrap_err();
        assert!(
            matches!(error, ClusterError::InvalidManifest { .. }),
            "{error}"
        );
    }
}
