//! Builder-API (ethereum/builder-specs) container a validator signs: `ValidatorRegistrationV1`,
//! signed under `DOMAIN_APPLICATION_BUILDER` with the network's genesis fork version.
//!
//! Deserialization refuses a fee recipient that is not 20 bytes, a public key that is not 48
//! bytes and uint64 values out of range; unknown JSON keys are ignored.
#![forbid(unsafe_code)]

use serde::Deserialize;
use tree_hash_derive::TreeHash;

use super::{quoted_u64, ExecutionAddress};
use crate::types::BlsPublicKey;

/// `ValidatorRegistrationV1`: what VALIDATOR_REGISTRATION signs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct ValidatorRegistrationV1 {
    pub fee_recipient: ExecutionAddress,
    #[serde(with = "quoted_u64")]
    pub gas_limit: u64,
    #[serde(with = "quoted_u64")]
    pub timestamp: u64,
    pub pubkey: BlsPublicKey,
}
