//! The ceremony definition: who takes part (each participant's enrolment key, identity key, TLS
//! certificate and endpoint, in `--identity` order), the threshold, how many validators, and
//! what their deposits say. Its canonical hash is the ceremony id, to which every message,
//! proof and ciphertext is bound.
//!
//! Refuses: an unknown format or network; fewer than 2 or more than [`MAX_PARTICIPANTS`]
//! participants; `t < 2` (one operator alone would hold every key) or `t > n`; no validators or
//! more than [`MAX_VALIDATORS`]; an amount outside 1..=2048 ETH; two participants sharing an
//! endpoint, identity key, enrolment key or certificate; an endpoint that is not `https://`.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::consensus::{ExecutionAddress, Network};
use crate::manifest::EnrolmentPublicKey;
use crate::types::{fixed_bytes, ForkVersion, ShareIndex, Threshold};

use super::crypto::IdentityPublicKey;
use super::encoding::Canonical;
use super::{DkgError, ParticipantIndex, MAX_PARTICIPANTS, MAX_VALIDATORS};

/// `format` of a definition file.
pub const DEFINITION_FORMAT: &str = "keystake-dkg-definition/1";

const GWEI_PER_ETH: u64 = 1_000_000_000;

fixed_bytes!(
    /// The ceremony id: SHA-256 of the definition's canonical encoding.
    CeremonyId,
    32
);

/// One participant's public identity (what `dkg identity` writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    /// `https://HOST:PORT` of the appliance's mTLS port.
    pub endpoint: String,
    /// Shares are encrypted to it (ECDH inside the token).
    pub enrolment_public_key: EnrolmentPublicKey,
    /// Broadcasts are signed by it (inside the token).
    pub identity_public_key: IdentityPublicKey,
    /// DER of the appliance's TLS certificate: peers pin it instead of trusting a CA.
    #[serde(with = "crate::manifest::hex_bytes")]
    pub tls_certificate: Vec<u8>,
}

/// A ceremony definition (`definition.json`). Participant `i` (1-based) is `participants[i-1]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub format: String,
    pub threshold: Threshold,
    pub validators: u32,
    pub network: String,
    pub withdrawal_address: ExecutionAddress,
    pub fee_recipient: ExecutionAddress,
    pub amount_gwei: u64,
    pub participants: Vec<Participant>,
}

impl Definition {
    /// Check every rule of the module doc.
    pub fn validate(&self) -> Result<(), DkgError> {
        let bad = |why: String| Err(DkgError::Definition(why));
        if self.format != DEFINITION_FORMAT {
            return bad(format!(
                "format '{}' is not '{DEFINITION_FORMAT}'",
                self.format
            ));
        }
        let n = self.participants.len();
        if n < 2 || n > MAX_PARTICIPANTS as usize {
            return bad(format!(
                "{n} participants; between 2 and {MAX_PARTICIPANTS} are supported"
            ));
        }
        let t = self.threshold.get() as usize;
        if t < 2 || t > n {
            return bad(format!(
                "threshold {t} must be at least 2 (one operator alone would hold the keys) and at most the {n} participants"
            ));
        }
        if self.validators == 0 || self.validators > MAX_VALIDATORS {
            return bad(format!(
                "{} validators; between 1 and {MAX_VALIDATORS} are supported",
                self.validators
            ));
        }
        if self.network_config().is_none() {
            return bad(format!("unknown network '{}'", self.network));
        }
        if self.amount_gwei < GWEI_PER_ETH || self.amount_gwei > 2048 * GWEI_PER_ETH {
            return bad(format!(
                "amount {} gwei is outside 1..=2048 ETH",
                self.amount_gwei
            ));
        }
        let mut endpoints = BTreeSet::new();
        let mut identities = BTreeSet::new();
        let mut enrolments = BTreeSet::new();
        let mut certificates = BTreeSet::new();
        for (position, participant) in self.participants.iter().enumerate() {
            let index = position + 1;
            if !participant.endpoint.starts_with("https://") || participant.endpoint.len() > 256 {
                return bad(format!(
                    "participant {index}: endpoint '{}' is not an https:// URL",
                    participant.endpoint
                ));
            }
            if participant.tls_certificate.is_empty() || participant.tls_certificate.len() > 16384 {
                return bad(format!(
                    "participant {index}: the TLS certificate must be 1..=16384 bytes of DER"
                ));
            }
            IdentityPublicKey::parse(&participant.identity_public_key.0)
                .map_err(|e| DkgError::Definition(format!("participant {index}: {e}")))?;
            if !endpoints.insert(participant.endpoint.as_str())
                || !identities.insert(participant.identity_public_key)
                || !enrolments.insert(*participant.enrolment_public_key.as_sec1())
                || !certificates.insert(participant.tls_certificate.as_slice())
            {
                return bad(format!(
                    "participant {index} repeats another participant's endpoint, identity key, enrolment key or certificate"
                ));
            }
        }
        Ok(())
    }

    /// SHA-256 of the canonical encoding: the ceremony id.
    pub fn ceremony_id(&self) -> CeremonyId {
        let mut c = Canonical::new("keystake-dkg-definition-v1");
        c.bytes(self.format.as_bytes())
            .u32(self.threshold.get())
            .u32(self.validators)
            .bytes(self.network.as_bytes())
            .bytes(&self.withdrawal_address.0)
            .bytes(&self.fee_recipient.0)
            .u64(self.amount_gwei)
            .u32(self.participants.len() as u32);
        for participant in &self.participants {
            c.bytes(participant.endpoint.as_bytes())
                .bytes(participant.enrolment_public_key.as_sec1())
                .bytes(&participant.identity_public_key.0)
                .bytes(&participant.tls_certificate);
        }
        CeremonyId(c.finish())
    }

    pub fn n(&self) -> u32 {
        self.participants.len() as u32
    }

    /// Indices `1..=n`.
    pub fn indices(&self) -> impl Iterator<Item = ParticipantIndex> + '_ {
        (1..=self.n()).filter_map(|i| ShareIndex::new(i).ok())
    }

    /// Participant `index` (1-based), if it exists.
    pub fn participant(&self, index: ParticipantIndex) -> Option<&Participant> {
        self.participants.get(index.get() as usize - 1)
    }

    /// The index of the participant with this identity key.
    pub fn index_of(&self, identity: &IdentityPublicKey) -> Option<ParticipantIndex> {
        self.participants
            .iter()
            .position(|p| p.identity_public_key == *identity)
            .and_then(|position| ShareIndex::new(position as u32 + 1).ok())
    }

    /// "participant 4 (https://…)": how errors and failure reports name a participant.
    pub fn describe(&self, index: ParticipantIndex) -> String {
        match self.participant(index) {
            Some(p) => format!("participant {index} ({})", p.endpoint),
            None => format!("participant {index}"),
        }
    }

    pub fn network_config(&self) -> Option<Network> {
        Network::by_name(&self.network)
    }

    /// The genesis fork version deposits are signed under.
    pub fn deposit_fork_version(&self) -> Option<ForkVersion> {
        self.network_config().map(|n| n.genesis_fork_version)
    }

    /// `0x01 ‖ 11 zero bytes ‖ address`, or `0x02 …` (compounding) when the amount exceeds
    /// 32 ETH — a validator above 32 ETH only earns on the excess with 0x02 credentials.
    pub fn withdrawal_credentials(&self) -> [u8; 32] {
        let mut credentials = [0u8; 32];
        credentials[0] = if self.amount_gwei > 32 * GWEI_PER_ETH {
            0x02
        } else {
            0x01
        };
        credentials[12..].copy_from_slice(&self.withdrawal_address.0);
        credentials
    }

    pub fn threshold(&self) -> Threshold {
        self.threshold
    }
}
