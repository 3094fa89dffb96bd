//! Consensus-layer signing objects: the SSZ containers a validator signs (phase0 → fulu, generic
//! over the mainnet and minimal presets), the networks and fork schedules that pick the domain and
//! the container schema, and `compute_domain` / `compute_signing_root` as the consensus specs
//! define them.
//!
//! Every hash tree root here comes from the `tree_hash` derive over `ssz_types` containers; this
//! module writes no Merkle hashing of its own. It is pure: the only input it reads besides values
//! is the text of a network config (`Network::from_toml_str`), never a file; the built-in
//! networks are TOML files in `networks/` compiled into the binary and read by the same parser.
//!
//! It refuses network configs with unknown keys, forks out of order, a fork scheduled without its
//! predecessors, and zero slots per epoch; JSON values that are not what their container
//! declares (wrong byte lengths, lists over their limit, bitfields of the wrong size, uint64 values
//! that are negative, fractional or above 2^64-1) fail to deserialize.
#![forbid(unsafe_code)]

pub mod altair;
pub mod builder;
pub mod electra;
mod network;
pub mod phase0;
mod preset;

pub use network::{ForkName, Network, NetworkConfigError, Preset, ScheduledFork};
pub use preset::{MainnetSpec, MinimalSpec, PresetSpec};

use std::fmt;

use serde::{Deserialize, Deserializer};
use tree_hash::{Hash256, PackedEncoding, TreeHash, TreeHashType};
use tree_hash_derive::TreeHash;

use crate::types::{
    fixed_bytes, parse_uint64, BlsPublicKey, BlsSignature, Domain, DomainType, ForkVersion,
    ParseError, Root,
};

/// `DOMAIN_BEACON_PROPOSER`: blocks.
pub const DOMAIN_BEACON_PROPOSER: DomainType = DomainType([0x00, 0x00, 0x00, 0x00]);
/// `DOMAIN_BEACON_ATTESTER`: attestations.
pub const DOMAIN_BEACON_ATTESTER: DomainType = DomainType([0x01, 0x00, 0x00, 0x00]);
/// `DOMAIN_RANDAO`: RANDAO reveals.
pub const DOMAIN_RANDAO: DomainType = DomainType([0x02, 0x00, 0x00, 0x00]);
/// `DOMAIN_DEPOSIT`: deposit messages.
pub const DOMAIN_DEPOSIT: DomainType = DomainType([0x03, 0x00, 0x00, 0x00]);
/// `DOMAIN_VOLUNTARY_EXIT`: voluntary exits.
pub const DOMAIN_VOLUNTARY_EXIT: DomainType = DomainType([0x04, 0x00, 0x00, 0x00]);
/// `DOMAIN_SELECTION_PROOF`: aggregation-slot selection proofs.
pub const DOMAIN_SELECTION_PROOF: DomainType = DomainType([0x05, 0x00, 0x00, 0x00]);
/// `DOMAIN_AGGREGATE_AND_PROOF`: aggregate-and-proof messages.
pub const DOMAIN_AGGREGATE_AND_PROOF: DomainType = DomainType([0x06, 0x00, 0x00, 0x00]);
/// `DOMAIN_SYNC_COMMITTEE`: sync committee messages (Altair).
pub const DOMAIN_SYNC_COMMITTEE: DomainType = DomainType([0x07, 0x00, 0x00, 0x00]);
/// `DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF`: sync aggregator selection (Altair).
pub const DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF: DomainType = DomainType([0x08, 0x00, 0x00, 0x00]);
/// `DOMAIN_CONTRIBUTION_AND_PROOF`: sync committee contributions (Altair).
pub const DOMAIN_CONTRIBUTION_AND_PROOF: DomainType = DomainType([0x09, 0x00, 0x00, 0x00]);
/// `DOMAIN_APPLICATION_BUILDER`: builder-API validator registrations.
pub const DOMAIN_APPLICATION_BUILDER: DomainType = DomainType([0x00, 0x00, 0x00, 0x01]);

/// The all-zero root: the `genesis_validators_root` of deposit and builder domains, which must be
/// valid before (or independently of) any particular chain.
pub const ZERO_ROOT: Root = Root([0u8; 32]);

/// `ForkData` of the phase0 spec: what a domain commits to besides its type.
#[derive(Debug, Clone, PartialEq, Eq, TreeHash)]
pub struct ForkData {
    pub current_version: ForkVersion,
    pub genesis_validators_root: Root,
}

/// `SigningData` of the phase0 spec: the object root bound to its domain.
#[derive(Debug, Clone, PartialEq, Eq, TreeHash)]
pub struct SigningData {
    pub object_root: Root,
    pub domain: Domain,
}

/// `compute_domain(domain_type, fork_version, genesis_validators_root)`: the domain type followed
/// by the first 28 bytes of `hash_tree_root(ForkData)`.
pub fn compute_domain(
    domain_type: DomainType,
    fork_version: ForkVersion,
    genesis_validators_root: Root,
) -> Domain {
    let fork_data_root = ForkData {
        current_version: fork_version,
        genesis_validators_root,
    }
    .tree_hash_root();
    let mut domain = [0u8; 32];
    domain[..4].copy_from_slice(&domain_type.0);
    domain[4..].copy_from_slice(&fork_data_root.0[..28]);
    Domain(domain)
}

/// `compute_signing_root(object, domain)`: `hash_tree_root(SigningData(hash_tree_root(object), domain))`.
pub fn compute_signing_root<T: TreeHash>(object: &T, domain: Domain) -> Root {
    let signing_data = SigningData {
        object_root: root_of(object),
        domain,
    };
    root_of(&signing_data)
}

/// `hash_tree_root(object)` as a `Root`.
pub fn root_of<T: TreeHash>(object: &T) -> Root {
    Root(object.tree_hash_root().0)
}

/// The shared byte newtypes are SSZ `Vector[byte, N]`s; hashing is delegated to `tree_hash`'s own
/// implementation for `[u8; N]`, so these containers stay plain derives.
macro_rules! tree_hash_as_byte_vector {
    ($($name:ty => $len:expr),* $(,)?) => {
        $(
            impl TreeHash for $name {
                fn tree_hash_type() -> TreeHashType {
                    <[u8; $len]>::tree_hash_type()
                }

                fn tree_hash_packed_encoding(&self) -> PackedEncoding {
                    self.0.tree_hash_packed_encoding()
                }

                fn tree_hash_packing_factor() -> usize {
                    <[u8; $len]>::tree_hash_packing_factor()
                }

                fn tree_hash_root(&self) -> Hash256 {
                    self.0.tree_hash_root()
                }
            }
        )*
    };
}

tree_hash_as_byte_vector!(
    Root => 32,
    Domain => 32,
    ForkVersion => 4,
    BlsPublicKey => 48,
    BlsSignature => 96,
    Bytes32 => 32,
    ExecutionAddress => 20,
);

// Byte vectors that are not roots, keys or signatures (graffiti, withdrawal credentials, fee
// recipients): the same `0x`-hex newtype as the shared ones in `types`.
fixed_bytes!(
    /// An opaque `Bytes32` (graffiti, withdrawal credentials).
    Bytes32,
    32
);
fixed_bytes!(
    /// A 20-byte execution-layer address (`ExecutionAddress`, the builder fee recipient).
    ExecutionAddress,
    20
);

/// Serde for `uint64` fields: a decimal string (the API form, up to 2^64-1) or a non-negative JSON
/// integer, as `types::Slot` accepts. Anything else gets the same message as `types::ParseError`.
pub(crate) mod quoted_u64 {
    use super::*;

    struct Uint64Visitor;

    impl serde::de::Visitor<'_> for Uint64Visitor {
        type Value = u64;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a decimal unsigned 64-bit integer")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<u64, E> {
            parse_uint64(text).map_err(E::custom)
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
            Ok(value)
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
            u64::try_from(value).map_err(|_| E::custom(ParseError::InvalidUint64))
        }

        fn visit_f64<E: serde::de::Error>(self, _value: f64) -> Result<u64, E> {
            // serde_json turns integers above 2^64-1 into floats: refuse them, never round.
            Err(E::custom(ParseError::InvalidUint64))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(Uint64Visitor)
    }

    /// One list element (for `quoted_u64_list`).
    pub(crate) struct Element(pub u64);

    impl<'de> Deserialize<'de> for Element {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserialize(deserializer).map(Element)
        }
    }
}

/// Serde for `List[uint64, N]` (e.g. `attesting_indices`): each element as `quoted_u64`, and the
/// list refused when longer than `N`.
pub(crate) mod quoted_u64_list {
    use super::quoted_u64::Element;
    use serde::{Deserialize, Deserializer};
    use ssz_types::{typenum::Unsigned, VariableList};

    pub fn deserialize<'de, D, N>(deserializer: D) -> Result<VariableList<u64, N>, D::Error>
    where
        D: Deserializer<'de>,
        N: Unsigned,
    {
        let elements = Vec::<Element>::deserialize(deserializer)?;
        let count = elements.len();
        VariableList::new(elements.into_iter().map(|Element(value)| value).collect()).map_err(
            |_| {
                serde::de::Error::custom(format!(
                    "list of {count} elements exceeds the limit of {}",
                    N::to_usize()
                ))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Root {
        text.parse().expect("test root")
    }

    #[test]
    fn domain_matches_the_vector_for_mainnet_attester() {
        // attestation__key0: Electra fork version, mainnet genesis validators root.
        let domain = compute_domain(
            DOMAIN_BEACON_ATTESTER,
            ForkVersion([5, 0, 0, 0]),
            root("0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"),
        );
        assert_eq!(
            domain.to_hex(),
            "0x01000000ad532ceb9ec5d246daad29da8aa157bfdab35e5f069f9db81f1da754"
        );
    }

    #[test]
    fn deposit_domain_is_the_well_known_mainnet_value() {
        let domain = compute_domain(DOMAIN_DEPOSIT, ForkVersion([0; 4]), ZERO_ROOT);
        assert_eq!(
            domain.to_hex(),
            "0x03000000f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a9"
        );
    }

    #[test]
    fn signing_root_depends_on_object_and_domain() {
        let domain_a = compute_domain(DOMAIN_RANDAO, ForkVersion([0; 4]), ZERO_ROOT);
        let domain_b = compute_domain(DOMAIN_RANDAO, ForkVersion([1, 0, 0, 0]), ZERO_ROOT);
        assert_ne!(
            compute_signing_root(&7u64, domain_a),
            compute_signing_root(&8u64, domain_a)
        );
        assert_ne!(
            compute_signing_root(&7u64, domain_a),
            compute_signing_root(&7u64, domain_b)
        );
    }

    #[test]
    fn quoted_u64_accepts_strings_and_integers_only() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(with = "quoted_u64")]
            value: u64,
        }
        let parse = |json: &str| serde_json::from_str::<Holder>(json).map(|h| h.value);
        assert_eq!(
            parse(r#"{"value":"18446744073709551615"}"#).ok(),
            Some(u64::MAX)
        );
        assert_eq!(parse(r#"{"value":12}"#).ok(), Some(12));
        for bad in [
            r#"{"value":"18446744073709551616"}"#,
            r#"{"value":"-1"}"#,
            r#"{"value":-1}"#,
            r#"{"value":1.5}"#,
            r#"{"value":"+1"}"#,
            r#"{"value":""}"#,
            r#"{"value":18446744073709551616}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} must be refused");
        }
    }
}
