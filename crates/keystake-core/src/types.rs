//! Newtypes for the values that must never be mixed up: slots and epochs, roots and domains, fork
//! versions, BLS public keys and signatures, share indices and thresholds.
//!
//! These are *public* values only. Secret material (key shares, passwords, PINs) lives in the
//! `bls`, `keystore` and `seal` modules inside `secrecy`/`zeroize` types and never appears here.
//!
//! Hex on the wire is `0x`-prefixed (either case accepted on input, lowercase on output); this
//! module refuses a missing prefix, odd lengths, non-hex digits and wrong byte lengths, and a
//! share index or threshold of 0, even when deserialized.
#![forbid(unsafe_code)]

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a textual value could not be parsed. The message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("expected a 0x-prefixed hex string")]
    MissingHexPrefix,
    #[error("invalid hex: {0}")]
    InvalidHex(String),
    #[error("expected {expected} bytes, got {actual}")]
    WrongLength { expected: usize, actual: usize },
    #[error("expected a decimal unsigned 64-bit integer")]
    InvalidUint64,
    #[error("must be at least 1")]
    Zero,
}

/// The digits after the `0x` (or `0X`) prefix.
fn hex_digits(text: &str) -> Result<&str, ParseError> {
    text.strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .ok_or(ParseError::MissingHexPrefix)
}

/// Decode `0x`-prefixed hex of any length.
pub fn decode_hex_prefixed(text: &str) -> Result<Vec<u8>, ParseError> {
    hex::decode(hex_digits(text)?).map_err(|e| ParseError::InvalidHex(e.to_string()))
}

/// Decode `0x`-prefixed hex of exactly `N` bytes.
pub fn decode_hex_array<const N: usize>(text: &str) -> Result<[u8; N], ParseError> {
    let digits = hex_digits(text)?;
    if digits.len() == 2 * N {
        // The common case, straight into the array: no intermediate vector per field.
        let mut bytes = [0u8; N];
        hex::decode_to_slice(digits, &mut bytes)
            .map_err(|e| ParseError::InvalidHex(e.to_string()))?;
        return Ok(bytes);
    }
    // Any other length is an error; decoding first reports bad digits before the length, as
    // for any length.
    let bytes = hex::decode(digits).map_err(|e| ParseError::InvalidHex(e.to_string()))?;
    Err(ParseError::WrongLength {
        expected: N,
        actual: bytes.len(),
    })
}

/// `0x`-prefixed lowercase hex.
pub fn encode_hex_prefixed(bytes: &[u8]) -> String {
    // One allocation of the final size (`hex::encode` grows a string digit by digit, and a
    // `format!` around it copies it again): every signature and root answered goes through here.
    let mut text = vec![0u8; 2 + 2 * bytes.len()];
    text[..2].copy_from_slice(b"0x");
    hex::encode_to_slice(bytes, &mut text[2..]).expect("the buffer holds two digits per byte");
    String::from_utf8(text).expect("hex digits are ASCII")
}

/// Parse a uint64 sent as a decimal string (Web3Signer and the beacon API quote uint64s).
pub fn parse_uint64(text: &str) -> Result<u64, ParseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::InvalidUint64);
    }
    text.parse::<u64>().map_err(|_| ParseError::InvalidUint64)
}

/// A fixed-length public byte string, `0x` hex on the wire and in `Display`/`Debug`. Used here
/// and by `consensus` (`Bytes32`, `ExecutionAddress`); paths are qualified so it expands anywhere
/// in the crate.
macro_rules! fixed_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            pub fn from_slice(bytes: &[u8]) -> Result<Self, $crate::types::ParseError> {
                <[u8; $len]>::try_from(bytes).map(Self).map_err(|_| {
                    $crate::types::ParseError::WrongLength {
                        expected: $len,
                        actual: bytes.len(),
                    }
                })
            }

            pub fn to_hex(&self) -> String {
                $crate::types::encode_hex_prefixed(&self.0)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::types::ParseError;
            fn from_str(text: &str) -> Result<Self, $crate::types::ParseError> {
                $crate::types::decode_hex_array::<$len>(text).map(Self)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_hex())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use fixed_bytes;

fixed_bytes!(
    /// A 32-byte SSZ hash-tree root (signing roots, block roots, genesis validators root).
    Root,
    32
);
fixed_bytes!(
    /// A 32-byte signature domain (`compute_domain`).
    Domain,
    32
);
fixed_bytes!(
    /// A 4-byte fork version.
    ForkVersion,
    4
);
fixed_bytes!(
    /// A 4-byte domain type (`DOMAIN_BEACON_ATTESTER` …).
    DomainType,
    4
);
fixed_bytes!(
    /// A compressed BLS12-381 G1 public key (48 bytes). Only the bytes: curve and subgroup
    /// membership are checked by the `bls` module when the key is used.
    BlsPublicKey,
    48
);
fixed_bytes!(
    /// A compressed BLS12-381 G2 signature (96 bytes). Public: a partial signature is public too.
    BlsSignature,
    96
);

macro_rules! quoted_u64 {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
        pub struct $name(pub u64);

        impl $name {
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(text: &str) -> Result<Self, ParseError> {
                parse_uint64(text).map(Self)
            }
        }

        /// Serialized as a decimal string, as the beacon and Web3Signer APIs do.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0.to_string())
            }
        }

        /// Accepts a decimal string (the API form) or a JSON number (EIP-3076 files written by
        /// some tools).
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Wire<'a> {
                    Text(std::borrow::Cow<'a, str>),
                    Number(u64),
                }
                match Wire::deserialize(deserializer)? {
                    Wire::Text(text) => text.parse().map_err(serde::de::Error::custom),
                    Wire::Number(n) => Ok(Self(n)),
                }
            }
        }
    };
}

quoted_u64!(
    /// A beacon-chain slot.
    Slot
);
quoted_u64!(
    /// A beacon-chain epoch.
    Epoch
);

impl Slot {
    /// The epoch this slot belongs to.
    pub fn epoch(self, slots_per_epoch: u64) -> Epoch {
        Epoch(self.0 / slots_per_epoch)
    }
}

macro_rules! nonzero_u32 {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
        #[serde(try_from = "u32", into = "u32")]
        pub struct $name(NonZeroU32);

        impl $name {
            /// Refuses 0.
            pub fn new(value: u32) -> Result<Self, ParseError> {
                NonZeroU32::new(value).map(Self).ok_or(ParseError::Zero)
            }

            pub fn get(self) -> u32 {
                self.0.get()
            }
        }

        /// The one way in from a number, deserialization included: refuses 0.
        impl TryFrom<u32> for $name {
            type Error = ParseError;
            fn try_from(value: u32) -> Result<Self, ParseError> {
                Self::new(value)
            }
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> u32 {
                value.get()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

nonzero_u32!(
    /// A 1-based threshold share index: share `i` is `f(i)`. Zero would be the secret itself, so
    /// it cannot be constructed, not even by deserialization.
    ShareIndex
);
nonzero_u32!(
    /// The number `t` of shares needed to sign (at least 1).
    Threshold
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_newtypes_refuse_bad_input() {
        assert!("0x00".parse::<Root>().is_err());
        assert!("00".repeat(32).parse::<Root>().is_err());
        assert!(format!("0x{}", "zz".repeat(32)).parse::<Root>().is_err());
        assert!(format!("0x{}0", "00".repeat(31)).parse::<Root>().is_err());
        let root: Root = format!("0x{}", "AB".repeat(32)).parse().unwrap();
        assert_eq!(root.to_hex(), format!("0x{}", "ab".repeat(32)));
    }

    /// The decoding before the fixed-size fast path: any text, any length.
    fn decode_array_reference<const N: usize>(text: &str) -> Result<[u8; N], ParseError> {
        let bytes = decode_hex_prefixed(text)?;
        <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| ParseError::WrongLength {
            expected: N,
            actual: bytes.len(),
        })
    }

    proptest::proptest! {
        #[test]
        fn hex_encoding_is_prefixed_lowercase_and_decodes_back(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let text = encode_hex_prefixed(&bytes);
            proptest::prop_assert_eq!(&text, &format!("0x{}", hex::encode(&bytes)));
            proptest::prop_assert_eq!(decode_hex_prefixed(&text).unwrap(), bytes);
        }

        #[test]
        fn fixed_size_decoding_answers_as_before(text in "(0[xX])?[0-9a-fA-Fg ]{0,12}") {
            proptest::prop_assert_eq!(decode_hex_array::<4>(&text), decode_array_reference::<4>(&text));
            proptest::prop_assert_eq!(decode_hex_array::<5>(&text), decode_array_reference::<5>(&text));
        }
    }

    #[test]
    fn uint64_strings() {
        assert_eq!(
            "18446744073709551615".parse::<Slot>().unwrap(),
            Slot(u64::MAX)
        );
        assert!("18446744073709551616".parse::<Slot>().is_err());
        assert!("-1".parse::<Epoch>().is_err());
        assert!("+1".parse::<Epoch>().is_err());
        assert!("".parse::<Epoch>().is_err());
        let e: Epoch = serde_json::from_str("\"12\"").unwrap();
        assert_eq!(e, Epoch(12));
        let e: Epoch = serde_json::from_str("12").unwrap();
        assert_eq!(e, Epoch(12));
    }

    #[test]
    fn share_index_is_never_zero() {
        assert!(ShareIndex::new(0).is_err());
        assert!(serde_json::from_str::<ShareIndex>("0").is_err());
        assert_eq!(serde_json::from_str::<ShareIndex>("3").unwrap().get(), 3);
        assert!(serde_json::from_str::<Threshold>("0").is_err());
        assert!(Threshold::new(0).is_err());
        assert_eq!(u32::from(Threshold::new(2).unwrap()), 2);
        assert_eq!(ShareIndex::new(7).unwrap().to_string(), "7");
        assert_eq!(
            serde_json::to_string(&ShareIndex::new(5).unwrap()).unwrap(),
            "5"
        );
    }
}
