//! The public files of a trusted split (design.md §4, docs/threshold.md): the **cluster
//! manifest** that anyone can verify, the **share package** wire format, and the enrolment public
//! key that names each operator appliance.
//!
//! Pure: parsing, canonical hashing and verification only. The package's encryption and its
//! opening inside the HSM live in [`crate::enrolment`].
//!
//! [`Manifest::verify`] refuses a manifest whose format tag is unknown, whose `t`/`n` are out of
//! range, whose share indices are not exactly `1..=n` in order, whose Feldman commitments do not
//! start with the group key or are not `t` valid points, whose share public keys do not match the
//! commitments or do not interpolate to the group key, or whose operator list names a fingerprint
//! that is not its key's or one appliance twice (two shares on one appliance would let one
//! operator sign alone). Unknown JSON fields are refused everywhere.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::threshold::{self, FeldmanCommitments, ThresholdError, MAX_SHARES};
use crate::types::{decode_hex_array, encode_hex_prefixed, BlsPublicKey, ShareIndex, Threshold};

/// Serialize a type as its `Display` text and deserialize it through `FromStr`.
macro_rules! serde_as_text {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// `format` of a cluster manifest.
pub const MANIFEST_FORMAT: &str = "keystake-cluster-manifest/1";
/// `format` of a share package.
pub const PACKAGE_FORMAT: &str = "keystake-share-package/1";
/// First word of the one-line enrolment public key text.
pub const ENROLMENT_KEY_TAG: &str = "keystake-enrolment-v1";
/// The only enrolment key algorithm: ECDH on NIST P-256 (see `crate::enrolment`).
pub const ENROLMENT_KEY_ALGORITHM: &str = "p256";
/// Domain-separation label of the package's additional authenticated data.
pub const PACKAGE_LABEL: &[u8; 25] = b"keystake-share-package-v1";

/// Length of an uncompressed SEC1 P-256 point (`0x04 || x || y`).
pub const P256_POINT_LEN: usize = 65;
/// AES-GCM IV length of a package.
pub const PACKAGE_IV_LEN: usize = 12;
/// Ciphertext of a package: the 32-byte share followed by the 16-byte GCM tag.
pub const PACKAGE_CIPHERTEXT_LEN: usize = 32 + 16;

/// Why a manifest, package or enrolment key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("unknown format {found:?} (expected {expected:?})")]
    UnknownFormat {
        found: String,
        expected: &'static str,
    },
    #[error("invalid enrolment public key: {0}")]
    InvalidEnrolmentKey(String),
    #[error("threshold {t} must be between 1 and the number of shares {n} (at most {MAX_SHARES})")]
    InvalidThreshold { t: u32, n: u32 },
    #[error("the manifest lists {listed} shares but says there are {participants}")]
    ShareCount { listed: usize, participants: u32 },
    #[error("share {position} of the list has index {found}; indices must be 1..=n in order")]
    IndexOutOfOrder { position: usize, found: ShareIndex },
    #[error("{commitments} Feldman commitments for threshold {t}; there must be exactly t")]
    CommitmentCount { commitments: usize, t: u32 },
    #[error("the first Feldman commitment is not the group public key")]
    GroupKeyNotCommitted,
    #[error("share public keys {0:?} do not match the Feldman commitments")]
    ShareKeyMismatch(Vec<ShareIndex>),
    #[error("the share public keys interpolate to {interpolated}, not to the group key")]
    GroupKeyMismatch { interpolated: BlsPublicKey },
    #[error("operator of share {index}: fingerprint {stated} is not the fingerprint of its key ({actual})")]
    FingerprintMismatch {
        index: ShareIndex,
        stated: EnrolmentFingerprint,
        actual: EnrolmentFingerprint,
    },
    #[error("shares {first} and {second} go to the same appliance ({fingerprint}); each operator must hold one share")]
    DuplicateOperator {
        first: ShareIndex,
        second: ShareIndex,
        fingerprint: EnrolmentFingerprint,
    },
    #[error("the manifest has no share {0}")]
    NoSuchShare(ShareIndex),
    #[error("the package's manifest hash {package} does not match the manifest ({manifest})")]
    ManifestHashMismatch {
        package: EnrolmentFingerprint,
        manifest: EnrolmentFingerprint,
    },
    #[error(
        "the package is addressed to {package} but the manifest gives share {index} to {manifest}"
    )]
    RecipientMismatch {
        index: ShareIndex,
        package: EnrolmentFingerprint,
        manifest: EnrolmentFingerprint,
    },
    #[error("malformed package: {0}")]
    MalformedPackage(String),
    #[error(transparent)]
    Threshold(#[from] ThresholdError),
}

/// An appliance's enrolment public key: an uncompressed SEC1 P-256 point.
///
/// Text form (what `enrolment show` prints and `split --enrolment-key` reads), one line:
/// `keystake-enrolment-v1 p256 0x04…` (65 bytes of hex). Only the shape is checked here; that the
/// point lies on the curve is checked when a package is encrypted to it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnrolmentPublicKey([u8; P256_POINT_LEN]);

impl EnrolmentPublicKey {
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, ManifestError> {
        let point: [u8; P256_POINT_LEN] = bytes.try_into().map_err(|_| {
            ManifestError::InvalidEnrolmentKey(format!(
                "expected a {P256_POINT_LEN}-byte uncompressed P-256 point, got {} bytes",
                bytes.len()
            ))
        })?;
        if point[0] != 0x04 {
            return Err(ManifestError::InvalidEnrolmentKey(
                "not an uncompressed point (must start with 0x04)".into(),
            ));
        }
        Ok(Self(point))
    }

    /// `0x04 || x || y`.
    pub fn as_sec1(&self) -> &[u8; P256_POINT_LEN] {
        &self.0
    }

    /// SHA-256 of the SEC1 point: how manifests and packages name an appliance.
    pub fn fingerprint(&self) -> EnrolmentFingerprint {
        EnrolmentFingerprint(Sha256::digest(self.0).into())
    }
}

impl fmt::Display for EnrolmentPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ENROLMENT_KEY_TAG} {ENROLMENT_KEY_ALGORITHM} {}",
            encode_hex_prefixed(&self.0)
        )
    }
}

impl fmt::Debug for EnrolmentPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnrolmentPublicKey({})", self.fingerprint())
    }
}

impl FromStr for EnrolmentPublicKey {
    type Err = ManifestError;
    /// Parses the one-line text form; surrounding whitespace (a final newline) is ignored.
    fn from_str(text: &str) -> Result<Self, ManifestError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [tag, algorithm, point] = words.as_slice() else {
            return Err(ManifestError::InvalidEnrolmentKey(format!(
                "expected one line \"{ENROLMENT_KEY_TAG} {ENROLMENT_KEY_ALGORITHM} 0x04…\""
            )));
        };
        if *tag != ENROLMENT_KEY_TAG {
            return Err(ManifestError::InvalidEnrolmentKey(format!(
                "starts with {tag:?}, expected {ENROLMENT_KEY_TAG:?}"
            )));
        }
        if *algorithm != ENROLMENT_KEY_ALGORITHM {
            return Err(ManifestError::InvalidEnrolmentKey(format!(
                "algorithm {algorithm:?} is not supported (only {ENROLMENT_KEY_ALGORITHM:?})"
            )));
        }
        let bytes: [u8; P256_POINT_LEN] = decode_hex_array(point)
            .map_err(|e| ManifestError::InvalidEnrolmentKey(e.to_string()))?;
        Self::from_sec1(&bytes)
    }
}

serde_as_text!(EnrolmentPublicKey);

/// A SHA-256 digest shown as `0x` hex: an enrolment key's fingerprint or a manifest hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnrolmentFingerprint(pub [u8; 32]);

/// The manifest hash has the same shape as a fingerprint.
pub type ManifestHash = EnrolmentFingerprint;

impl fmt::Display for EnrolmentFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_hex_prefixed(&self.0))
    }
}

impl fmt::Debug for EnrolmentFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for EnrolmentFingerprint {
    type Err = crate::types::ParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        decode_hex_array(text).map(Self)
    }
}

serde_as_text!(EnrolmentFingerprint);

/// The appliance that receives a share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub enrolment_public_key: EnrolmentPublicKey,
    /// SHA-256 of the enrolment key (redundant, so a human can compare it with `enrolment show`).
    pub fingerprint: EnrolmentFingerprint,
}

impl Operator {
    pub fn new(enrolment_public_key: EnrolmentPublicKey) -> Self {
        Operator {
            fingerprint: enrolment_public_key.fingerprint(),
            enrolment_public_key,
        }
    }
}

/// One share of the manifest: its index, public key `f(i)·G1`, and the appliance that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestShare {
    pub index: ShareIndex,
    pub public_key: BlsPublicKey,
    pub operator: Operator,
}

/// The public description of a t-of-n split (`manifest.json`). Public: no secret is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// The validator's public key `s·G1`.
    pub group_public_key: BlsPublicKey,
    pub threshold: Threshold,
    pub participants: u32,
    /// `a_k·G1` for `k = 0..t-1`.
    pub feldman_commitments: FeldmanCommitments,
    /// Shares `1..=n` in index order.
    pub shares: Vec<ManifestShare>,
}

/// A manifest that passed [`Manifest::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest(Manifest);

impl VerifiedManifest {
    pub fn manifest(&self) -> &Manifest {
        &self.0
    }

    pub fn threshold(&self) -> Threshold {
        self.0.threshold
    }

    pub fn participants(&self) -> u32 {
        self.0.participants
    }

    pub fn group_public_key(&self) -> BlsPublicKey {
        self.0.group_public_key
    }

    pub fn commitments(&self) -> &FeldmanCommitments {
        &self.0.feldman_commitments
    }

    /// Index → share public key.
    pub fn share_public_keys(&self) -> BTreeMap<ShareIndex, BlsPublicKey> {
        self.0
            .shares
            .iter()
            .map(|share| (share.index, share.public_key))
            .collect()
    }

    /// The share with this index.
    pub fn share(&self, index: ShareIndex) -> Result<&ManifestShare, ManifestError> {
        self.0
            .shares
            .iter()
            .find(|share| share.index == index)
            .ok_or(ManifestError::NoSuchShare(index))
    }

    /// See [`Manifest::hash`].
    pub fn hash(&self) -> ManifestHash {
        self.0.hash()
    }
}

impl Manifest {
    /// Assemble the manifest of a split: share `i` (1-based) goes to `operators[i-1]`.
    pub fn for_split(
        commitments: FeldmanCommitments,
        share_public_keys: &[BlsPublicKey],
        operators: &[EnrolmentPublicKey],
    ) -> Result<VerifiedManifest, ManifestError> {
        let n = u32::try_from(operators.len()).unwrap_or(u32::MAX);
        if share_public_keys.len() != operators.len() {
            return Err(ManifestError::ShareCount {
                listed: share_public_keys.len(),
                participants: n,
            });
        }
        let shares = share_public_keys
            .iter()
            .zip(operators)
            .enumerate()
            .map(|(position, (public_key, operator))| {
                let index = u32::try_from(position + 1)
                    .ok()
                    .and_then(|i| ShareIndex::new(i).ok())
                    .ok_or(ManifestError::InvalidThreshold {
                        t: commitments.threshold().get(),
                        n,
                    })?;
                Ok(ManifestShare {
                    index,
                    public_key: *public_key,
                    operator: Operator::new(*operator),
                })
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        Manifest {
            format: MANIFEST_FORMAT.to_owned(),
            group_public_key: commitments.group_public_key(),
            threshold: commitments.threshold(),
            participants: n,
            feldman_commitments: commitments,
            shares,
        }
        .verify()
    }

    /// SHA-256 of the canonical encoding (compact JSON in field order, lowercase hex). Packages
    /// bind to it, so a package only imports together with the manifest it was made with.
    pub fn hash(&self) -> ManifestHash {
        let canonical = serde_json::to_vec(self).expect("a manifest always serializes");
        EnrolmentFingerprint(Sha256::digest(canonical).into())
    }

    /// Check everything a manifest claims (see the module doc).
    pub fn verify(self) -> Result<VerifiedManifest, ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnknownFormat {
                found: self.format,
                expected: MANIFEST_FORMAT,
            });
        }
        let t = self.threshold.get();
        let n = self.participants;
        if t > n || n > MAX_SHARES {
            return Err(ManifestError::InvalidThreshold { t, n });
        }
        if self.shares.len() != n as usize {
            return Err(ManifestError::ShareCount {
                listed: self.shares.len(),
                participants: n,
            });
        }
        for (position, share) in self.shares.iter().enumerate() {
            if share.index.get() as usize != position + 1 {
                return Err(ManifestError::IndexOutOfOrder {
                    position: position + 1,
                    found: share.index,
                });
            }
        }
        let commitments = &self.feldman_commitments;
        if commitments.threshold() != self.threshold {
            return Err(ManifestError::CommitmentCount {
                commitments: commitments.as_slice().len(),
                t,
            });
        }
        if commitments.group_public_key() != self.group_public_key {
            return Err(ManifestError::GroupKeyNotCommitted);
        }
        let mut mismatched = Vec::new();
        for share in &self.shares {
            let expected = threshold::share_public_key_from_commitments(commitments, share.index)?;
            if expected != share.public_key {
                mismatched.push(share.index);
            }
        }
        if !mismatched.is_empty() {
            return Err(ManifestError::ShareKeyMismatch(mismatched));
        }
        let share_public_keys: BTreeMap<ShareIndex, BlsPublicKey> = self
            .shares
            .iter()
            .map(|share| (share.index, share.public_key))
            .collect();
        let interpolated =
            threshold::interpolate_group_public_key(&share_public_keys, self.threshold)?;
        if interpolated != self.group_public_key {
            return Err(ManifestError::GroupKeyMismatch { interpolated });
        }
        let mut seen: BTreeMap<EnrolmentFingerprint, ShareIndex> = BTreeMap::new();
        for share in &self.shares {
            let actual = share.operator.enrolment_public_key.fingerprint();
            if actual != share.operator.fingerprint {
                return Err(ManifestError::FingerprintMismatch {
                    index: share.index,
                    stated: share.operator.fingerprint,
                    actual,
                });
            }
            if let Some(first) = seen.insert(actual, share.index) {
                return Err(ManifestError::DuplicateOperator {
                    first,
                    second: share.index,
                    fingerprint: actual,
                });
            }
        }
        Ok(VerifiedManifest(self))
    }
}

/// Explicit share public keys (instead of a manifest) for combining: every key must lie on one
/// polynomial of degree `t-1` whose constant term is `group_public_key`.
pub fn verify_share_public_keys(
    share_public_keys: &BTreeMap<ShareIndex, BlsPublicKey>,
    t: Threshold,
    group_public_key: &BlsPublicKey,
) -> Result<(), ManifestError> {
    let interpolated = threshold::interpolate_group_public_key(share_public_keys, t)?;
    if interpolated != *group_public_key {
        return Err(ManifestError::GroupKeyMismatch { interpolated });
    }
    Ok(())
}

/// `share-<i>.pkg`: one share encrypted to one appliance's enrolment key (see
/// `crate::enrolment` for the construction). Everything in it is public except what the
/// ciphertext hides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharePackage {
    pub format: String,
    /// Fingerprint of the enrolment key this package is encrypted to.
    pub recipient: EnrolmentFingerprint,
    pub index: ShareIndex,
    /// [`Manifest::hash`] of `manifest`.
    pub manifest_sha256: ManifestHash,
    /// The whole manifest, so the appliance can check the share without another file.
    pub manifest: Manifest,
    /// The dealer's one-time P-256 public key (uncompressed SEC1, `0x` hex).
    #[serde(with = "hex_bytes")]
    pub ephemeral_public_key: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub iv: Vec<u8>,
    /// `AES-256-GCM(share) || tag`.
    #[serde(with = "hex_bytes")]
    pub ciphertext: Vec<u8>,
}

/// A package whose public parts were checked against its manifest; only the ciphertext remains
/// to be opened (by the recipient's HSM).
#[derive(Debug, Clone)]
pub struct CheckedPackage {
    pub manifest: VerifiedManifest,
    pub recipient: EnrolmentFingerprint,
    pub index: ShareIndex,
    pub ephemeral_public_key: EnrolmentPublicKey,
    pub iv: [u8; PACKAGE_IV_LEN],
    pub ciphertext: [u8; PACKAGE_CIPHERTEXT_LEN],
}

impl SharePackage {
    /// Check the format, the manifest (fully verified), the hash binding, that the manifest
    /// gives this share to this recipient, and the field lengths. With `expected_manifest`,
    /// also that the package was made with exactly that manifest.
    pub fn check(
        self,
        expected_manifest: Option<&VerifiedManifest>,
    ) -> Result<CheckedPackage, ManifestError> {
        if self.format != PACKAGE_FORMAT {
            return Err(ManifestError::UnknownFormat {
                found: self.format,
                expected: PACKAGE_FORMAT,
            });
        }
        let manifest = self.manifest.verify()?;
        let hash = manifest.hash();
        if hash != self.manifest_sha256 {
            return Err(ManifestError::ManifestHashMismatch {
                package: self.manifest_sha256,
                manifest: hash,
            });
        }
        if let Some(expected) = expected_manifest {
            if expected.hash() != hash {
                return Err(ManifestError::ManifestHashMismatch {
                    package: hash,
                    manifest: expected.hash(),
                });
            }
        }
        let share = manifest.share(self.index)?;
        if share.operator.fingerprint != self.recipient {
            return Err(ManifestError::RecipientMismatch {
                index: self.index,
                package: self.recipient,
                manifest: share.operator.fingerprint,
            });
        }
        let ephemeral_public_key = EnrolmentPublicKey::from_sec1(&self.ephemeral_public_key)
            .map_err(|e| ManifestError::MalformedPackage(format!("ephemeral key: {e}")))?;
        let iv = self.iv.as_slice().try_into().map_err(|_| {
            ManifestError::MalformedPackage(format!(
                "iv is {} bytes, expected {PACKAGE_IV_LEN}",
                self.iv.len()
            ))
        })?;
        let ciphertext = self.ciphertext.as_slice().try_into().map_err(|_| {
            ManifestError::MalformedPackage(format!(
                "ciphertext is {} bytes, expected {PACKAGE_CIPHERTEXT_LEN}",
                self.ciphertext.len()
            ))
        })?;
        Ok(CheckedPackage {
            recipient: self.recipient,
            index: self.index,
            manifest,
            ephemeral_public_key,
            iv,
            ciphertext,
        })
    }
}

/// The package's AES-GCM additional authenticated data, fixed-length fields in this order:
///
/// ```text
/// "keystake-share-package-v1"   25
/// share index (u32 BE)           4
/// threshold t (u32 BE)           4
/// participants n (u32 BE)        4
/// group public key              48
/// manifest hash                 32
/// recipient fingerprint         32
/// ephemeral public key          65
/// ```
pub fn package_aad(
    index: ShareIndex,
    manifest: &VerifiedManifest,
    recipient: &EnrolmentFingerprint,
    ephemeral_public_key: &EnrolmentPublicKey,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(PACKAGE_LABEL.len() + 12 + 48 + 32 + 32 + P256_POINT_LEN);
    aad.extend_from_slice(PACKAGE_LABEL);
    aad.extend_from_slice(&index.get().to_be_bytes());
    aad.extend_from_slice(&manifest.threshold().get().to_be_bytes());
    aad.extend_from_slice(&manifest.participants().to_be_bytes());
    aad.extend_from_slice(manifest.group_public_key().as_bytes());
    aad.extend_from_slice(&manifest.hash().0);
    aad.extend_from_slice(&recipient.0);
    aad.extend_from_slice(ephemeral_public_key.as_sec1());
    aad
}

/// Distinct indices listed more than once, for error messages about duplicate inputs.
pub fn duplicates(indices: impl IntoIterator<Item = ShareIndex>) -> Vec<ShareIndex> {
    let mut seen = BTreeSet::new();
    let mut repeated = BTreeSet::new();
    for index in indices {
        if !seen.insert(index) {
            repeated.insert(index);
        }
    }
    repeated.into_iter().collect()
}

/// `0x` hex for variable-length public byte strings.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::types::encode_hex_prefixed(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        crate::types::decode_hex_prefixed(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::bls::SecretKey;

    fn idx(i: u32) -> ShareIndex {
        ShareIndex::new(i).unwrap()
    }

    /// Distinct well-formed operator keys (shape only: the manifest never does ECDH).
    fn operator_key(seed: u8) -> EnrolmentPublicKey {
        let mut point = [seed; P256_POINT_LEN];
        point[0] = 0x04;
        EnrolmentPublicKey::from_sec1(&point).unwrap()
    }

    fn sample(t: u32, n: u32) -> VerifiedManifest {
        let mut rng = StdRng::seed_from_u64(u64::from(t * 100 + n));
        let secret = SecretKey::random(&mut rng);
        let split = threshold::split(&secret, Threshold::new(t).unwrap(), n, &mut rng).unwrap();
        let keys: Vec<BlsPublicKey> = split.shares.iter().map(|s| s.public_key()).collect();
        let operators: Vec<EnrolmentPublicKey> = (1..=n as u8).map(operator_key).collect();
        let manifest = Manifest::for_split(split.commitments, &keys, &operators).unwrap();
        assert_eq!(manifest.group_public_key(), secret.public_key());
        manifest
    }

    fn reverify(manifest: Manifest) -> Result<VerifiedManifest, ManifestError> {
        let text = serde_json::to_string_pretty(&manifest).unwrap();
        serde_json::from_str::<Manifest>(&text).unwrap().verify()
    }

    #[test]
    fn a_split_gives_a_verifiable_manifest_that_survives_json() {
        let manifest = sample(3, 4);
        let again = reverify(manifest.manifest().clone()).unwrap();
        assert_eq!(again, manifest);
        assert_eq!(again.hash(), manifest.hash());
        assert_eq!(again.share_public_keys().len(), 4);
    }

    #[test]
    fn every_inconsistency_is_refused() {
        let good = sample(3, 4).manifest().clone();
        let other = sample(3, 5).manifest().clone();

        let mut m = good.clone();
        m.shares[2].public_key = other.shares[2].public_key;
        assert_eq!(
            reverify(m).unwrap_err(),
            ManifestError::ShareKeyMismatch(vec![idx(3)])
        );

        let mut m = good.clone();
        m.group_public_key = other.group_public_key;
        assert_eq!(
            reverify(m).unwrap_err(),
            ManifestError::GroupKeyNotCommitted
        );

        let mut m = good.clone();
        m.feldman_commitments = other.feldman_commitments.clone();
        m.group_public_key = other.group_public_key;
        assert!(matches!(
            reverify(m).unwrap_err(),
            ManifestError::ShareKeyMismatch(v) if v.len() == 4
        ));

        let mut m = good.clone();
        m.shares.swap(0, 1);
        assert!(matches!(
            reverify(m).unwrap_err(),
            ManifestError::IndexOutOfOrder { position: 1, .. }
        ));

        let mut m = good.clone();
        m.shares.pop();
        assert!(matches!(
            reverify(m).unwrap_err(),
            ManifestError::ShareCount { listed: 3, .. }
        ));

        let mut m = good.clone();
        m.threshold = Threshold::new(5).unwrap();
        assert!(matches!(
            reverify(m).unwrap_err(),
            ManifestError::InvalidThreshold { t: 5, n: 4 }
        ));

        let mut m = good.clone();
        m.threshold = Threshold::new(2).unwrap();
        assert!(matches!(
            reverify(m).unwrap_err(),
            ManifestError::CommitmentCount {
                commitments: 3,
                t: 2
            }
        ));

        let mut m = good.clone();
        m.shares[1].operator = m.shares[0].operator.clone();
        assert!(matches!(
            reverify(m).unwrap_err(),
            ManifestError::DuplicateOperator { first, second, .. } if first == idx(1) && second == idx(2)
        ));

        let mut m = good.clone();
        m.shares[3].operator.fingerprint = m.shares[0].operator.fingerprint;
        assert!(matches!(
            reverify(m).unwrap_err(),
            ManifestError::FingerprintMismatch { index, .. } if index == idx(4)
        ));

        let mut m = good.clone();
        m.format = "keystake-cluster-manifest/2".into();
        assert!(matches!(
            reverify(m).unwrap_err(),
            ManifestError::UnknownFormat { .. }
        ));

        let text = serde_json::to_string(&good)
            .unwrap()
            .replacen('{', "{\"extra\":1,", 1);
        assert!(serde_json::from_str::<Manifest>(&text).is_err());
    }

    #[test]
    fn the_hash_changes_with_any_field() {
        let good = sample(2, 3);
        let mut m = good.manifest().clone();
        m.shares[0].operator = Operator::new(operator_key(77));
        assert_ne!(m.hash(), good.hash());
    }

    #[test]
    fn explicit_share_keys_must_interpolate_to_the_group_key() {
        let manifest = sample(3, 4);
        let keys = manifest.share_public_keys();
        let t = manifest.threshold();
        verify_share_public_keys(&keys, t, &manifest.group_public_key()).unwrap();
        let other = sample(3, 5);
        assert!(matches!(
            verify_share_public_keys(&keys, t, &other.group_public_key()),
            Err(ManifestError::GroupKeyMismatch { .. })
        ));
        let mut wrong = keys.clone();
        wrong.insert(idx(4), other.share_public_keys()[&idx(4)]);
        assert!(matches!(
            verify_share_public_keys(&wrong, t, &manifest.group_public_key()),
            Err(ManifestError::Threshold(
                ThresholdError::InconsistentSharePublicKeys { .. }
            ))
        ));
    }

    #[test]
    fn enrolment_key_text_round_trips_and_refuses_bad_input() {
        let key = operator_key(9);
        let text = format!("{key}\n");
        assert!(text.starts_with("keystake-enrolment-v1 p256 0x04"));
        assert_eq!(text.parse::<EnrolmentPublicKey>().unwrap(), key);
        let hex = encode_hex_prefixed(key.as_sec1());
        for bad in [
            String::new(),
            format!("keystake-enrolment-v2 p256 {hex}"),
            format!("keystake-enrolment-v1 rsa {hex}"),
            format!("keystake-enrolment-v1 p256 {}", &hex[..hex.len() - 2]),
            format!("keystake-enrolment-v1 p256 0x05{}", &hex[4..]),
            format!("keystake-enrolment-v1 p256 {hex} extra"),
        ] {
            assert!(bad.parse::<EnrolmentPublicKey>().is_err(), "{bad:?}");
        }
        assert_eq!(
            key.fingerprint().0,
            <[u8; 32]>::from(Sha256::digest(key.as_sec1()))
        );
    }

    #[test]
    fn aad_binds_every_field() {
        let manifest = sample(2, 3);
        let recipient = manifest.share(idx(1)).unwrap().operator.fingerprint;
        let ephemeral = operator_key(50);
        let base = package_aad(idx(1), &manifest, &recipient, &ephemeral);
        assert_eq!(base.len(), 25 + 12 + 48 + 32 + 32 + 65);
        let other_manifest = sample(2, 4);
        for variant in [
            package_aad(idx(2), &manifest, &recipient, &ephemeral),
            package_aad(idx(1), &other_manifest, &recipient, &ephemeral),
            package_aad(
                idx(1),
                &manifest,
                &operator_key(51).fingerprint(),
                &ephemeral,
            ),
            package_aad(idx(1), &manifest, &recipient, &operator_key(52)),
        ] {
            assert_ne!(variant, base);
        }
        assert_eq!(
            duplicates([idx(1), idx(2), idx(1), idx(3), idx(2)]),
            vec![idx(1), idx(2)]
        );
    }
}
