//! The EIP-3076 slashing-protection interchange format, version 5: a pure serde model plus the
//! validation and transformations that need no database (minify, merge per key).
//!
//! uint64 values are written as decimal strings and accepted as strings or JSON numbers; hex is
//! `0x`-prefixed. Refuses: any `interchange_format_version` other than `"5"`, malformed JSON,
//! missing required fields (`metadata`, `data`, `pubkey`, `signed_blocks`, `signed_attestations`,
//! `slot`, `source_epoch`, `target_epoch`), and wrongly sized keys or roots. Unknown extra fields
//! are ignored (other implementations add their own); a misspelt *required* field is still an
//! error because the required one is then missing.
//!
//! Slashable data inside a file (two blocks at one slot, surrounding attestations, a source
//! above its target) is *not* refused: EIP-3076 asks importers to accept it, and the importer's
//! watermarks make it harmless.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{SignedAttestation, SignedBlock};
use crate::types::{BlsPublicKey, Epoch, Root, Slot};

/// The only interchange format version this build reads and writes.
pub const FORMAT_VERSION: &str = "5";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterchangeError {
    #[error("invalid interchange JSON at {path}: {message}")]
    Json { path: String, message: String },
    #[error("unsupported interchange_format_version {found:?}; this signer reads version \"5\"")]
    UnsupportedVersion { found: String },
}

/// A whole interchange document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interchange {
    pub metadata: InterchangeMetadata,
    pub data: Vec<InterchangeRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterchangeMetadata {
    /// Always `"5"` for documents this module accepts.
    pub interchange_format_version: String,
    /// Identifies the network; an importer bound to another network must refuse the file.
    pub genesis_validators_root: Root,
}

/// The signing history of one validator key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterchangeRecord {
    pub pubkey: BlsPublicKey,
    pub signed_blocks: Vec<InterchangeBlock>,
    pub signed_attestations: Vec<InterchangeAttestation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InterchangeBlock {
    pub slot: Slot,
    /// Absent when the exporter did not keep it; such an entry conflicts with every block at
    /// its slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_root: Option<Root>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InterchangeAttestation {
    pub source_epoch: Epoch,
    pub target_epoch: Epoch,
    /// Absent when the exporter did not keep it; such an entry conflicts with every
    /// attestation with its target epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_root: Option<Root>,
}

impl From<InterchangeBlock> for SignedBlock {
    fn from(b: InterchangeBlock) -> Self {
        SignedBlock {
            slot: b.slot,
            signing_root: b.signing_root,
        }
    }
}

impl From<SignedBlock> for InterchangeBlock {
    fn from(b: SignedBlock) -> Self {
        InterchangeBlock {
            slot: b.slot,
            signing_root: b.signing_root,
        }
    }
}

impl From<InterchangeAttestation> for SignedAttestation {
    fn from(a: InterchangeAttestation) -> Self {
        SignedAttestation {
            source: a.source_epoch,
            target: a.target_epoch,
            signing_root: a.signing_root,
        }
    }
}

impl From<SignedAttestation> for InterchangeAttestation {
    fn from(a: SignedAttestation) -> Self {
        InterchangeAttestation {
            source_epoch: a.source,
            target_epoch: a.target,
            signing_root: a.signing_root,
        }
    }
}

/// The highest values one key's imported history reaches: what an import raises the key's
/// watermark to (design.md §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maxima {
    pub block_slot: Option<Slot>,
    pub attestation_source: Option<Epoch>,
    pub attestation_target: Option<Epoch>,
}

impl InterchangeRecord {
    /// The maxima of this record's entries (each component independently).
    pub fn maxima(&self) -> Maxima {
        Maxima {
            block_slot: self.signed_blocks.iter().map(|b| b.slot).max(),
            attestation_source: self
                .signed_attestations
                .iter()
                .map(|a| a.source_epoch)
                .max(),
            attestation_target: self
                .signed_attestations
                .iter()
                .map(|a| a.target_epoch)
                .max(),
        }
    }
}

impl Interchange {
    /// An empty version-5 document for `genesis_validators_root`.
    pub fn new(genesis_validators_root: Root) -> Self {
        Interchange {
            metadata: InterchangeMetadata {
                interchange_format_version: FORMAT_VERSION.to_owned(),
                genesis_validators_root,
            },
            data: Vec::new(),
        }
    }

    /// Parse and validate a document.
    pub fn from_json(text: &str) -> Result<Self, InterchangeError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let interchange: Interchange = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|e| InterchangeError::Json {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        deserializer.end().map_err(|e| InterchangeError::Json {
            path: ".".to_owned(),
            message: e.to_string(),
        })?;
        interchange.validate()?;
        Ok(interchange)
    }

    /// Pretty-printed JSON (uint64 as decimal strings).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("an interchange always serializes")
    }

    /// The checks serde cannot express.
    pub fn validate(&self) -> Result<(), InterchangeError> {
        if self.metadata.interchange_format_version != FORMAT_VERSION {
            return Err(InterchangeError::UnsupportedVersion {
                found: self.metadata.interchange_format_version.clone(),
            });
        }
        Ok(())
    }

    /// One record per public key (entries of repeated keys merged), entries sorted and exact
    /// duplicates removed, keys in byte order. Slashable data is kept as it is.
    pub fn merged(&self) -> Interchange {
        let mut by_key: BTreeMap<BlsPublicKey, InterchangeRecord> = BTreeMap::new();
        for record in &self.data {
            let merged = by_key
                .entry(record.pubkey)
                .or_insert_with(|| InterchangeRecord {
                    pubkey: record.pubkey,
                    signed_blocks: Vec::new(),
                    signed_attestations: Vec::new(),
                });
            merged
                .signed_blocks
                .extend_from_slice(&record.signed_blocks);
            merged
                .signed_attestations
                .extend_from_slice(&record.signed_attestations);
        }
        let data = by_key
            .into_values()
            .map(|mut record| {
                record.signed_blocks.sort();
                record.signed_blocks.dedup();
                record
                    .signed_attestations
                    .sort_by_key(|a| (a.target_epoch, a.source_epoch, a.signing_root));
                record.signed_attestations.dedup();
                record
            })
            .collect();
        Interchange {
            metadata: self.metadata.clone(),
            data,
        }
    }

    /// The minimal form: per key one block at the highest slot and one attestation at the
    /// highest source and highest target, all without signing root. Importing it gives the
    /// same watermarks as importing the complete form.
    pub fn minified(&self) -> Interchange {
        let data = self
            .merged()
            .data
            .into_iter()
            .map(|record| {
                let maxima = record.maxima();
                InterchangeRecord {
                    pubkey: record.pubkey,
                    signed_blocks: maxima
                        .block_slot
                        .map(|slot| InterchangeBlock {
                            slot,
                            signing_root: None,
                        })
                        .into_iter()
                        .collect(),
                    signed_attestations: match (
                        maxima.attestation_source,
                        maxima.attestation_target,
                    ) {
                        (Some(source_epoch), Some(target_epoch)) => vec![InterchangeAttestation {
                            source_epoch,
                            target_epoch,
                            signing_root: None,
                        }],
                        _ => Vec::new(),
                    },
                }
            })
            .collect();
        Interchange {
            metadata: self.metadata.clone(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

    fn document(version: &str) -> String {
        format!(
            r#"{{"metadata": {{"interchange_format_version": "{version}",
                 "genesis_validators_root": "0x04700007fabc8282644aed6d1c7c9e21d38a03a0c4ba193f3afe428824b3a673"}},
               "data": [{{"pubkey": "{KEY}",
                 "signed_blocks": [{{"slot": "81952", "signing_root": "0x4ff6f743a43f3b4f95350831aeaf0a122a1a392922c45d804280284a69eb850b"}}, {{"slot": 81951}}],
                 "signed_attestations": [{{"source_epoch": "2290", "target_epoch": "3007"}}],
                 "extension": true}}]}}"#
        )
    }

    #[test]
    fn parses_strings_and_numbers_and_writes_strings() {
        let interchange = Interchange::from_json(&document("5")).unwrap();
        let record = &interchange.data[0];
        assert_eq!(record.pubkey.to_hex(), KEY);
        assert_eq!(record.signed_blocks[1].slot, Slot(81951));
        assert_eq!(record.signed_blocks[1].signing_root, None);
        assert_eq!(record.signed_attestations[0].target_epoch, Epoch(3007));
        let text = interchange.to_json();
        assert!(text.contains(r#""slot": "81951""#), "{text}");
        assert!(!text.contains("null"), "absent roots are omitted: {text}");
        assert_eq!(Interchange::from_json(&text).unwrap(), interchange);
    }

    #[test]
    fn refuses_other_versions_and_missing_fields() {
        assert_eq!(
            Interchange::from_json(&document("4")),
            Err(InterchangeError::UnsupportedVersion {
                found: "4".to_owned()
            })
        );
        let missing = document("5").replace("signed_attestations", "signed_attestation");
        let error = Interchange::from_json(&missing).unwrap_err().to_string();
        assert!(error.contains("signed_attestations"), "{error}");
        let short_key = document("5").replace(KEY, "0xa99a");
        let error = Interchange::from_json(&short_key).unwrap_err().to_string();
        assert!(error.contains("data[0].pubkey"), "{error}");
        assert!(Interchange::from_json(&(document("5") + "x")).is_err());
    }

    #[test]
    fn merge_and_minify() {
        let mut interchange = Interchange::from_json(&document("5")).unwrap();
        let mut second = interchange.data[0].clone();
        second.signed_attestations = vec![
            InterchangeAttestation {
                source_epoch: Epoch(3000),
                target_epoch: Epoch(3001),
                signing_root: None,
            },
            InterchangeAttestation {
                source_epoch: Epoch(2290),
                target_epoch: Epoch(3007),
                signing_root: None,
            },
        ];
        interchange.data.push(second);
        let merged = interchange.merged();
        assert_eq!(merged.data.len(), 1);
        assert_eq!(merged.data[0].signed_blocks.len(), 2);
        assert_eq!(merged.data[0].signed_attestations.len(), 2);
        let minimal = interchange.minified();
        assert_eq!(
            minimal.data[0].signed_blocks,
            vec![InterchangeBlock {
                slot: Slot(81952),
                signing_root: None
            }]
        );
        assert_eq!(
            minimal.data[0].signed_attestations,
            vec![InterchangeAttestation {
                source_epoch: Epoch(3000),
                target_epoch: Epoch(3007),
                signing_root: None
            }]
        );
    }
}
