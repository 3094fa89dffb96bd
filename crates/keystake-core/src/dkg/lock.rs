//! The result of a successful ceremony (`lock.json`) and its independent verification, plus the
//! staking-deposit-cli `deposit-data.json` derived from it.
//!
//! The lock hash commits to the ceremony id, the threshold and, per validator, the group
//! commitments, every public share, the withdrawal credentials, the amount and the deposit
//! message root; each validator's group key signs it (a threshold signature made with the new
//! shares) and every participant's identity key signs it.
//!
//! [`verify_lock`] refuses: a definition whose hash is not the ceremony id; commitments that are
//! not `t` valid points; a group key other than the constant commitment; a public share off the
//! commitments; a deposit whose roots, credentials or amount differ from the definition's or
//! whose signature does not verify under the group key for the network's genesis fork; a lock
//! hash that does not recompute; a group signature of the lock hash that does not verify; a
//! participant signature missing, repeated or not verifying.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use crate::bls;
use crate::consensus::{
    compute_domain, compute_signing_root,
    phase0::{DepositData, DepositMessage},
    root_of, Bytes32, DOMAIN_DEPOSIT, ZERO_ROOT,
};
use crate::threshold::FeldmanCommitments;
use crate::types::{fixed_bytes, BlsPublicKey, BlsSignature, ForkVersion, Root};

use super::crypto::IdentitySignature;
use super::definition::{CeremonyId, Definition};
use super::encoding::{sha256, Canonical, SeedStream};
use super::{DkgError, ParticipantIndex};

/// `format` of a lock file.
pub const LOCK_FORMAT: &str = "keystake-dkg-lock/1";

/// `deposit_cli_version` written into `deposit-data.json` (the launchpad checks its presence and
/// accepts this version).
pub const DEPOSIT_CLI_VERSION: &str = "2.7.0";

fixed_bytes!(
    /// The lock hash (module doc).
    LockHash,
    32
);

/// A validator's deposit, as signed by the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockDeposit {
    pub pubkey: BlsPublicKey,
    pub withdrawal_credentials: Bytes32,
    pub amount: u64,
    pub signature: BlsSignature,
    pub deposit_message_root: Root,
    pub deposit_data_root: Root,
    pub fork_version: ForkVersion,
}

/// One validator of the lock. `public_shares[i-1]` is participant `i`'s share public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockValidator {
    pub group_public_key: BlsPublicKey,
    pub public_shares: Vec<BlsPublicKey>,
    pub commitments: Vec<BlsPublicKey>,
    pub deposit: LockDeposit,
    /// The group's threshold signature of the lock hash.
    pub lock_signature: BlsSignature,
}

/// A participant's identity signature of the lock hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSignature {
    pub participant: ParticipantIndex,
    pub signature: IdentitySignature,
}

/// `lock.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub format: String,
    pub ceremony_id: CeremonyId,
    pub threshold: u32,
    pub definition: Definition,
    pub validators: Vec<LockValidator>,
    pub lock_hash: LockHash,
    pub participant_signatures: Vec<ParticipantSignature>,
}

/// What the lock hash covers for one validator.
pub(crate) struct LockEntry<'a> {
    pub commitments: &'a [BlsPublicKey],
    pub public_shares: &'a [BlsPublicKey],
    pub withdrawal_credentials: &'a [u8; 32],
    pub amount: u64,
    pub deposit_message_root: &'a Root,
}

pub(crate) fn compute_lock_hash(
    ceremony: &CeremonyId,
    threshold: u32,
    entries: &[LockEntry<'_>],
) -> LockHash {
    let mut c = Canonical::new("keystake-dkg-lock-v1");
    c.bytes(&ceremony.0)
        .u32(threshold)
        .u32(entries.len() as u32);
    for entry in entries {
        c.u32(entry.commitments.len() as u32);
        for point in entry.commitments {
            c.bytes(point.as_bytes());
        }
        c.u32(entry.public_shares.len() as u32);
        for point in entry.public_shares {
            c.bytes(point.as_bytes());
        }
        c.bytes(entry.withdrawal_credentials)
            .u64(entry.amount)
            .bytes(&entry.deposit_message_root.0);
    }
    LockHash(c.finish())
}

/// The digest a participant's identity key signs for the lock.
pub(crate) fn lock_digest(lock_hash: &LockHash) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(b"keystake-dkg-lock-signature-v1");
    bytes.extend_from_slice(&lock_hash.0);
    sha256(&bytes)
}

/// The deposit message of a validator and its signing root under the network's genesis fork.
pub(crate) fn deposit_message(
    definition: &Definition,
    fork_version: ForkVersion,
    pubkey: BlsPublicKey,
) -> (DepositMessage, Root, Root) {
    let message = DepositMessage {
        pubkey,
        withdrawal_credentials: Bytes32(definition.withdrawal_credentials()),
        amount: definition.amount_gwei,
    };
    let domain = compute_domain(DOMAIN_DEPOSIT, fork_version, ZERO_ROOT);
    let message_root = root_of(&message);
    let signing_root = compute_signing_root(&message, domain);
    (message, message_root, signing_root)
}

pub(crate) fn deposit_data_root(message: &DepositMessage, signature: BlsSignature) -> Root {
    root_of(&DepositData {
        pubkey: message.pubkey,
        withdrawal_credentials: message.withdrawal_credentials,
        amount: message.amount,
        signature,
    })
}

/// The first validator whose `(message, signature)` does not verify under its group key, or
/// `None` when all do. All are checked in one batch ([`bls::verify_distinct_batch`]) whose
/// 128-bit weights come from a hash of every key, message and signature checked (Fiat–Shamir:
/// a verifier has no randomness source here, and the weights are fixed only by everything they
/// weigh); one by one only when the batch fails.
fn first_bad_signature(
    group_keys: &[bls::ValidPublicKey],
    checks: &[(&[u8], &BlsSignature)],
) -> Option<usize> {
    if checks.is_empty() {
        return None;
    }
    let decoded: Vec<Option<bls::ValidSignature>> = checks
        .iter()
        .map(|(_, signature)| bls::ValidSignature::decode(signature).ok())
        .collect();
    if let Some(v) = decoded.iter().position(Option::is_none) {
        return Some(v);
    }
    let signatures: Vec<bls::ValidSignature> = decoded.into_iter().flatten().collect();
    let messages: Vec<&[u8]> = checks.iter().map(|(message, _)| *message).collect();
    // Everything the weights weigh goes into their seed: each key, message and signature.
    let mut transcript = Canonical::new("keystake-lock-verify-batch-v1");
    for (key, (message, signature)) in group_keys.iter().zip(checks) {
        transcript
            .bytes(key.to_bytes().as_bytes())
            .bytes(message)
            .bytes(signature.as_bytes());
    }
    let seed = transcript.finish();
    let mut weights = SeedStream::new(&seed, b"weights");
    if bls::verify_distinct_batch(&messages, group_keys, &signatures, &mut weights) {
        return None;
    }
    (0..checks.len())
        .find(|v| !bls::verify_valid(&group_keys[*v], messages[*v], &signatures[*v]))
        .or(Some(0))
}

/// Check everything of the module doc; `Ok` means the lock is what an honest ceremony produced.
pub fn verify_lock(lock: &Lock) -> Result<(), DkgError> {
    let bad = |why: String| Err(DkgError::Lock(why));
    if lock.format != LOCK_FORMAT {
        return bad(format!("format '{}' is not '{LOCK_FORMAT}'", lock.format));
    }
    let definition = &lock.definition;
    definition.validate()?;
    if definition.ceremony_id() != lock.ceremony_id {
        return bad("the definition's hash is not the ceremony id".into());
    }
    let t = definition.threshold.get();
    if lock.threshold != t {
        return bad(format!(
            "threshold {} differs from the definition's {t}",
            lock.threshold
        ));
    }
    if lock.validators.len() != definition.validators as usize {
        return bad(format!(
            "{} validators, the definition asks for {}",
            lock.validators.len(),
            definition.validators
        ));
    }
    let fork_version = definition
        .deposit_fork_version()
        .ok_or_else(|| DkgError::Lock("unknown network".into()))?;
    let n = definition.participants.len();
    let mut entries = Vec::with_capacity(lock.validators.len());
    let mut signing_roots = Vec::with_capacity(lock.validators.len());
    let mut group_keys = Vec::with_capacity(lock.validators.len());
    for (v, validator) in lock.validators.iter().enumerate() {
        let commitments = FeldmanCommitments::new(validator.commitments.clone())
            .map_err(|e| DkgError::Lock(format!("validator {v}: {e}")))?;
        if validator.commitments.len() != t as usize {
            return bad(format!("validator {v}: not {t} commitments"));
        }
        if commitments.group_public_key() != validator.group_public_key {
            return bad(format!(
                "validator {v}: the group key is not the constant commitment"
            ));
        }
        if validator.public_shares.len() != n {
            return bad(format!("validator {v}: not {n} public shares"));
        }
        let expected = super::verify::public_shares(&commitments, n as u32)
            .map_err(|e| DkgError::Lock(format!("validator {v}: {e}")))?;
        for (position, (share, expected)) in
            validator.public_shares.iter().zip(&expected).enumerate()
        {
            if expected != share {
                return bad(format!(
                    "validator {v}: public share {} is not on the commitments",
                    position + 1
                ));
            }
        }
        let deposit = &validator.deposit;
        let (message, message_root, signing_root) =
            deposit_message(definition, fork_version, validator.group_public_key);
        if deposit.pubkey != validator.group_public_key
            || deposit.withdrawal_credentials != message.withdrawal_credentials
            || deposit.amount != message.amount
            || deposit.fork_version != fork_version
            || deposit.deposit_message_root != message_root
        {
            return bad(format!(
                "validator {v}: the deposit does not match the definition"
            ));
        }
        if deposit.deposit_data_root != deposit_data_root(&message, deposit.signature) {
            return bad(format!("validator {v}: wrong deposit data root"));
        }
        group_keys.push(commitments.points()[0]);
        signing_roots.push(signing_root);
        entries.push((validator, message_root));
    }
    // The deposit signatures, then (below) the lock signatures: each set in one batch, one by
    // one only to name the first that fails.
    let deposits: Vec<(&[u8], &BlsSignature)> = lock
        .validators
        .iter()
        .zip(&signing_roots)
        .map(|(validator, root)| (root.0.as_slice(), &validator.deposit.signature))
        .collect();
    if let Some(v) = first_bad_signature(&group_keys, &deposits) {
        return bad(format!(
            "validator {v}: the deposit signature does not verify under the group key"
        ));
    }
    let lock_entries: Vec<LockEntry<'_>> = entries
        .iter()
        .map(|(validator, message_root)| LockEntry {
            commitments: &validator.commitments,
            public_shares: &validator.public_shares,
            withdrawal_credentials: &validator.deposit.withdrawal_credentials.0,
            amount: validator.deposit.amount,
            deposit_message_root: message_root,
        })
        .collect();
    let lock_hash = compute_lock_hash(&lock.ceremony_id, t, &lock_entries);
    if lock_hash != lock.lock_hash {
        return bad("the lock hash does not recompute".into());
    }
    let lock_signatures: Vec<(&[u8], &BlsSignature)> = lock
        .validators
        .iter()
        .map(|validator| (lock_hash.0.as_slice(), &validator.lock_signature))
        .collect();
    if let Some(v) = first_bad_signature(&group_keys, &lock_signatures) {
        return bad(format!(
            "validator {v}: the group signature of the lock hash does not verify"
        ));
    }
    let digest = lock_digest(&lock_hash);
    let mut seen = vec![false; n];
    for signature in &lock.participant_signatures {
        let Some(participant) = definition.participant(signature.participant) else {
            return bad(format!(
                "a signature from participant {} outside the definition",
                signature.participant
            ));
        };
        let slot = &mut seen[signature.participant.get() as usize - 1];
        if *slot {
            return bad(format!(
                "participant {} signed twice",
                signature.participant
            ));
        }
        *slot = true;
        if !participant
            .identity_public_key
            .verify(&digest, &signature.signature)
        {
            return bad(format!(
                "the signature of {} over the lock hash does not verify",
                definition.describe(signature.participant)
            ));
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return bad(format!(
            "no lock signature from participant {}",
            missing + 1
        ));
    }
    Ok(())
}

/// One entry of staking-deposit-cli's `deposit-data.json` (hex without `0x`, as that tool
/// writes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositDataEntry {
    pub pubkey: String,
    pub withdrawal_credentials: String,
    pub amount: u64,
    pub signature: String,
    pub deposit_message_root: String,
    pub deposit_data_root: String,
    pub fork_version: String,
    pub network_name: String,
    pub deposit_cli_version: String,
}

/// The `deposit-data.json` entries of a (verified) lock, in validator order.
pub fn deposit_data_entries(lock: &Lock) -> Vec<DepositDataEntry> {
    lock.validators
        .iter()
        .map(|validator| {
            let deposit = &validator.deposit;
            DepositDataEntry {
                pubkey: hex::encode(deposit.pubkey.0),
                withdrawal_credentials: hex::encode(deposit.withdrawal_credentials.0),
                amount: deposit.amount,
                signature: hex::encode(deposit.signature.0),
                deposit_message_root: hex::encode(deposit.deposit_message_root.0),
                deposit_data_root: hex::encode(deposit.deposit_data_root.0),
                fork_version: hex::encode(deposit.fork_version.0),
                network_name: lock.definition.network.clone(),
                deposit_cli_version: DEPOSIT_CLI_VERSION.to_owned(),
            }
        })
        .collect()
}

/// `entries` must be exactly what [`deposit_data_entries`] derives from the (verified) lock.
pub fn verify_deposit_data(lock: &Lock, entries: &[DepositDataEntry]) -> Result<(), DkgError> {
    let expected = deposit_data_entries(lock);
    if expected.len() != entries.len() {
        return Err(DkgError::DepositData(format!(
            "{} entries, the lock has {} validators",
            entries.len(),
            expected.len()
        )));
    }
    for (position, (got, want)) in entries.iter().zip(&expected).enumerate() {
        if got != want {
            return Err(DkgError::DepositData(format!(
                "entry {position} (pubkey {}) differs from the lock",
                got.pubkey
            )));
        }
    }
    Ok(())
}
