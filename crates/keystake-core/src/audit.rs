//! The tamper-evident audit log, pure part: what an entry holds, how entries are chained, and
//! how a stored chain is verified. Storage is `crate::store::audit` (entries are written in the
//! same SQLite transaction as the slashing record they explain).
//!
//! Every entry commits to its predecessor: `hash = SHA-256("keystake-audit-v1" ‖ prev_hash ‖
//! seq ‖ fields)`, each field length-prefixed so no two different entries encode alike. The
//! first entry's `prev_hash` is all zeroes; `seq` counts from 1 without gaps.
//!
//! [`verify`] refuses (and names the first entry at fault): a sequence gap (deleted entries), an
//! entry whose hash does not match its contents (edited, or moved to another position), and an
//! entry whose `prev_hash` is not its predecessor's hash (inserted, deleted or reordered
//! entries). A chain only proves that nobody edited it *without recomputing every later hash*;
//! truncating the newest entries, or rewriting the whole tail, is detected only against a head
//! (seq, hash) kept elsewhere — see [`verify_head`] and `docs/audit.md`.
#![forbid(unsafe_code)]

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain separation for the entry hash (bumped if the encoding ever changes).
const HASH_DOMAIN: &[u8] = b"keystake-audit-v1";

/// What happened to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The signature was (or, for the record written before signing, is being) released.
    Signed,
    /// Refused: authorization, validation, unknown key, slashing protection.
    Refused,
    /// Allowed, but signing failed afterwards (HSM down, …): nothing was released.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Signed => "signed",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Outcome::Signed, Outcome::Refused, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

/// One decision, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `rest`, `grpc` or `local`.
    pub api: String,
    /// Client display name (certificate CN, else DNS SAN, else fingerprint).
    pub client: String,
    /// SHA-256 fingerprint of the client certificate (hex), empty without one.
    pub fingerprint: String,
    /// The key concerned (0x hex), empty when none could be resolved.
    pub key: String,
    /// The request type (`ATTESTATION`, …) or administrative operation; empty when unknown.
    pub kind: String,
    /// The signing root (0x hex), empty when the request was refused before it was decoded.
    pub signing_root: String,
    pub outcome: Outcome,
    /// Why (for refusals and failures); empty for plain signatures.
    pub reason: String,
}

/// A stored, chained entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    #[serde(flatten)]
    pub record: Record,
    #[serde(with = "hex_bytes")]
    pub prev_hash: [u8; 32],
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

fn put(hasher: &mut Sha256, field: &[u8]) {
    hasher.update((field.len() as u64).to_be_bytes());
    hasher.update(field);
}

/// The hash an entry at `seq` after `prev_hash` must carry.
pub fn entry_hash(seq: u64, prev_hash: &[u8; 32], record: &Record) -> [u8; 32] {
    let mut hasher = Sha256::new();
    put(&mut hasher, HASH_DOMAIN);
    hasher.update(prev_hash);
    hasher.update(seq.to_be_bytes());
    hasher.update(record.time_ms.to_be_bytes());
    for field in [
        &record.api,
        &record.client,
        &record.fingerprint,
        &record.key,
        &record.kind,
        &record.signing_root,
        &record.outcome.as_str().to_owned(),
        &record.reason,
    ] {
        put(&mut hasher, field.as_bytes());
    }
    hasher.finalize().into()
}

/// The end of a chain: the next entry gets `seq + 1` and `prev_hash = hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };

    /// Chain `record` after this head, returning the entry and moving the head to it.
    pub fn append(&mut self, record: Record) -> Entry {
        let seq = self.seq + 1;
        let hash = entry_hash(seq, &self.hash, &record);
        let entry = Entry {
            seq,
            record,
            prev_hash: self.hash,
            hash,
        };
        *self = Head { seq, hash };
        entry
    }
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, hex::encode(self.hash))
    }
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("entry {found} follows entry {previous}: {} missing (deleted)", missing(*missing_from, *found))]
    Gap {
        previous: u64,
        found: u64,
        missing_from: u64,
    },
    #[error(
        "entry {seq} appears where entry {expected} belongs (inserted, duplicated or renumbered)"
    )]
    OutOfSequence { seq: u64, expected: u64 },
    #[error("entry {seq}: its hash does not match its contents (edited, or moved from another position)")]
    HashMismatch { seq: u64 },
    #[error("entry {seq}: it does not chain to entry {previous} (an entry before it was deleted, inserted or reordered)")]
    PrevMismatch { seq: u64, previous: u64 },
    #[error("the log ends at {actual} but the expected head is {expected} (newest entries deleted or rewritten)")]
    HeadMismatch { expected: Head, actual: Head },
}

fn missing(from: u64, found: u64) -> String {
    if from + 1 == found {
        format!("entry {from} is")
    } else {
        format!("entries {from} to {} are", found - 1)
    }
}

impl Broken {
    /// The sequence number at fault.
    pub fn seq(&self) -> u64 {
        match self {
            Broken::Gap { found, .. } => *found,
            Broken::OutOfSequence { seq, .. } => *seq,
            Broken::HashMismatch { seq } => *seq,
            Broken::PrevMismatch { seq, .. } => *seq,
            Broken::HeadMismatch { actual, .. } => actual.seq,
        }
    }
}

/// Verify entries given in storage order; returns the head of the intact chain.
pub fn verify<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Result<Head, Broken> {
    verify_from(Head::EMPTY, entries)
}

/// [`verify`] of a chain whose older entries were pruned: the first entry must follow `anchor`
/// (the head of the last entry removed; [`Head::EMPTY`] when none was).
pub fn verify_from<'a>(
    anchor: Head,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<Head, Broken> {
    let mut chain = ChainVerifier::new(anchor);
    for entry in entries {
        chain.push(entry)?;
    }
    Ok(chain.head())
}

/// [`verify_from`] one entry at a time, for chains read as a stream (archives, large logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainVerifier {
    head: Head,
}

impl ChainVerifier {
    /// A verifier whose next entry must follow `anchor`.
    pub fn new(anchor: Head) -> Self {
        Self { head: anchor }
    }

    /// The head of what was verified so far (the anchor before any entry).
    pub fn head(&self) -> Head {
        self.head
    }

    /// Check that `entry` follows the entries before it; the first fault is named.
    pub fn push(&mut self, entry: &Entry) -> Result<(), Broken> {
        let expected = self.head.seq + 1;
        if entry.seq > expected {
            return Err(Broken::Gap {
                previous: self.head.seq,
                found: entry.seq,
                missing_from: expected,
            });
        }
        if entry.seq < expected {
            return Err(Broken::OutOfSequence {
                seq: entry.seq,
                expected,
            });
        }
        if entry_hash(entry.seq, &entry.prev_hash, &entry.record) != entry.hash {
            return Err(Broken::HashMismatch { seq: entry.seq });
        }
        if entry.prev_hash != self.head.hash {
            return Err(Broken::PrevMismatch {
                seq: entry.seq,
                previous: self.head.seq,
            });
        }
        self.head = Head {
            seq: entry.seq,
            hash: entry.hash,
        };
        Ok(())
    }
}

/// Check a verified chain against a head recorded earlier: that entry must still be there,
/// unchanged. (Entries after it are fine: the log grows.)
pub fn verify_head(entries: &[Entry], expected: Head) -> Result<(), Broken> {
    let found = entries.iter().find(|e| e.seq == expected.seq);
    match found {
        Some(entry) if entry.hash == expected.hash => Ok(()),
        _ => Err(Broken::HeadMismatch {
            expected,
            actual: entries.last().map_or(Head::EMPTY, |e| Head {
                seq: e.seq,
                hash: e.hash,
            }),
        }),
    }
}

/// Domain separation of a signed audit head (issue 17): an identity-key signature over these
/// bytes can be neither a TLS handshake nor a DKG broadcast.
pub const HEAD_STATEMENT_TAG: &[u8] = b"keystake-audit-head-v1";

/// The statement an appliance's identity key signs for `head`: tag ‖ seq (8 bytes, big-endian) ‖
/// hash. Whoever keeps a signed head can later prove that entry `seq` had exactly this hash, so
/// a chain rewritten from any point before it (every hash recomputed) no longer matches.
pub fn head_statement(head: &Head) -> Vec<u8> {
    tagged_head(HEAD_STATEMENT_TAG, head)
}

/// `tag ‖ seq (8 bytes, big-endian) ‖ hash`.
fn tagged_head(tag: &[u8], head: &Head) -> Vec<u8> {
    let mut statement = Vec::with_capacity(tag.len() + 8 + 32);
    statement.extend_from_slice(tag);
    statement.extend_from_slice(&head.seq.to_be_bytes());
    statement.extend_from_slice(&head.hash);
    statement
}

/// A head signed by an appliance's identity key, as JSON: what `audit export --signed-head`
/// writes (signed over [`head_statement`]), and what `audit prune` stores as the anchor of a
/// pruned log (signed over [`anchor_statement`]: the two cannot stand in for each other). The
/// signature is checked by the caller, against the identity key it trusts (the HSM's), never
/// against the key the file names alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// `SEQ:SHA256HEX`, as `verify` prints it.
    pub head: String,
    /// The identity public key, uncompressed SEC1, hex.
    pub identity_key: String,
    /// ECDSA P-256 `r || s` over SHA-256 of the statement of the head, hex.
    pub signature: String,
}

/// Domain separation of the anchor of a pruned log (`audit prune`): a signed head (anyone may
/// hold one, they are meant to be handed out) must not be usable as an anchor, or whoever can
/// write the database could delete every entry up to a signed head and store that head as the
/// anchor without the HSM.
pub const ANCHOR_STATEMENT_TAG: &[u8] = b"keystake-audit-anchor-v1";

/// The statement an appliance's identity key signs for the anchor `head` of a pruned log: tag ‖
/// seq (8 bytes, big-endian) ‖ hash — "every entry up to `seq` was archived, and entry `seq` had
/// this hash".
pub fn anchor_statement(head: &Head) -> Vec<u8> {
    tagged_head(ANCHOR_STATEMENT_TAG, head)
}

/// Parse a head written as `SEQ:HEX` (what `audit verify` prints).
pub fn parse_head(text: &str) -> Option<Head> {
    let (seq, hash) = text.trim().split_once(':')?;
    let hash: [u8; 32] = hex::decode(hash).ok()?.try_into().ok()?;
    Some(Head {
        seq: seq.parse().ok()?,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Record {
        Record {
            time_ms: 1_700_000_000_000 + n,
            api: "rest".into(),
            client: format!("client-{n}"),
            fingerprint: "ab".repeat(32),
            key: format!("0x{}", "11".repeat(48)),
            kind: "ATTESTATION".into(),
            signing_root: format!("0x{}", "22".repeat(32)),
            outcome: if n % 3 == 0 {
                Outcome::Refused
            } else {
                Outcome::Signed
            },
            reason: if n % 3 == 0 {
                "no".into()
            } else {
                String::new()
            },
        }
    }

    fn chain(n: u64) -> Vec<Entry> {
        let mut head = Head::EMPTY;
        (1..=n).map(|i| head.append(record(i))).collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let entries = chain(10);
        let head = verify(&entries).unwrap();
        assert_eq!(head.seq, 10);
        assert_eq!(head.hash, entries[9].hash);
        assert_eq!(verify(&[]).unwrap(), Head::EMPTY);
        assert!(verify_head(
            &entries,
            Head {
                seq: 4,
                hash: entries[3].hash
            }
        )
        .is_ok());
        assert_eq!(parse_head(&head.to_string()), Some(head));
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = record(1);
        let mut variants = vec![];
        let mut r = base.clone();
        r.time_ms += 1;
        variants.push(r);
        for i in 0..7 {
            let mut r = base.clone();
            let field = match i {
                0 => &mut r.api,
                1 => &mut r.client,
                2 => &mut r.fingerprint,
                3 => &mut r.key,
                4 => &mut r.kind,
                5 => &mut r.signing_root,
                _ => &mut r.reason,
            };
            field.push('x');
            variants.push(r);
        }
        let mut r = base.clone();
        r.outcome = Outcome::Failed;
        variants.push(r);
        // Moving bytes between adjacent fields changes the hash too (length prefixes).
        let mut r = base.clone();
        r.api = "res".into();
        r.client = format!("t{}", base.client);
        variants.push(r);
        let original = entry_hash(1, &GENESIS, &base);
        for v in variants {
            assert_ne!(entry_hash(1, &GENESIS, &v), original, "{v:?}");
        }
        assert_ne!(entry_hash(2, &GENESIS, &base), original);
        assert_ne!(entry_hash(1, &[1; 32], &base), original);
    }

    #[test]
    fn edits_are_found_where_they_are() {
        let mut entries = chain(6);
        entries[3].record.reason = "edited".into();
        assert_eq!(verify(&entries), Err(Broken::HashMismatch { seq: 4 }));
    }

    #[test]
    fn deletions_are_found() {
        let mut entries = chain(6);
        entries.remove(2);
        assert_eq!(
            verify(&entries),
            Err(Broken::Gap {
                previous: 2,
                found: 4,
                missing_from: 3
            })
        );
        // Deleting and renumbering the rest: the renumbered entry's hash no longer matches.
        let mut entries = chain(6);
        entries.remove(2);
        for e in entries.iter_mut().skip(2) {
            e.seq -= 1;
        }
        assert_eq!(verify(&entries), Err(Broken::HashMismatch { seq: 3 }));
    }

    #[test]
    fn insertions_are_found() {
        // A copy of entry 2 inserted after it, later entries renumbered.
        let mut entries = chain(5);
        let mut copy = entries[1].clone();
        copy.seq = 3;
        entries.insert(2, copy);
        for e in entries.iter_mut().skip(3) {
            e.seq += 1;
        }
        assert_eq!(verify(&entries), Err(Broken::HashMismatch { seq: 3 }));
        // A freshly hashed forged entry in the middle still breaks the link after it.
        let mut entries = chain(5);
        let mut head = Head {
            seq: 2,
            hash: entries[1].hash,
        };
        let forged = head.append(record(99));
        entries.insert(2, forged);
        for e in entries.iter_mut().skip(3) {
            e.seq += 1;
        }
        assert_eq!(verify(&entries), Err(Broken::HashMismatch { seq: 4 }));
        // Duplicate sequence number.
        let mut entries = chain(3);
        let dup = entries[1].clone();
        entries.insert(2, dup);
        assert_eq!(
            verify(&entries),
            Err(Broken::OutOfSequence {
                seq: 2,
                expected: 3
            })
        );
    }

    #[test]
    fn reordering_is_found() {
        // Contents of 3 and 4 swapped, sequence numbers kept.
        let mut entries = chain(6);
        let (a, b) = (entries[2].clone(), entries[3].clone());
        entries[2] = Entry { seq: 3, ..b };
        entries[3] = Entry { seq: 4, ..a };
        assert_eq!(verify(&entries), Err(Broken::HashMismatch { seq: 3 }));
        // Whole entries swapped and their hashes recomputed in place: the links break.
        let mut entries = chain(6);
        entries.swap(2, 3);
        entries[2].seq = 3;
        entries[3].seq = 4;
        for e in &mut entries[2..4] {
            e.hash = entry_hash(e.seq, &e.prev_hash, &e.record);
        }
        assert_eq!(
            verify(&entries),
            Err(Broken::PrevMismatch {
                seq: 3,
                previous: 2
            })
        );
    }

    /// A pruned chain verifies from the head of the last entry removed, and from nothing else:
    /// another anchor, or a gap after it, is named.
    #[test]
    fn a_pruned_chain_verifies_from_its_anchor_only() {
        let entries = chain(10);
        let anchor = Head {
            seq: 4,
            hash: entries[3].hash,
        };
        let kept = &entries[4..];
        assert_eq!(
            verify_from(anchor, kept).unwrap(),
            verify(&entries).unwrap()
        );
        assert_eq!(verify_from(anchor, &[]).unwrap(), anchor);
        assert_eq!(
            verify(kept),
            Err(Broken::Gap {
                previous: 0,
                found: 5,
                missing_from: 1
            })
        );
        let wrong = Head {
            seq: 4,
            hash: entries[2].hash,
        };
        assert_eq!(
            verify_from(wrong, kept),
            Err(Broken::PrevMismatch {
                seq: 5,
                previous: 4
            })
        );
        assert!(matches!(
            verify_from(anchor, &entries[5..]),
            Err(Broken::Gap { found: 6, .. })
        ));
        let mut streamed = ChainVerifier::new(Head::EMPTY);
        for entry in &entries {
            streamed.push(entry).unwrap();
        }
        assert_eq!(streamed.head(), verify(&entries).unwrap());
    }

    #[test]
    fn a_signed_head_and_an_anchor_sign_different_statements() {
        let head = verify(&chain(3)).unwrap();
        assert_ne!(head_statement(&head), anchor_statement(&head));
        assert_eq!(
            anchor_statement(&head).len(),
            head_statement(&head).len() + 2
        );
    }

    #[test]
    fn truncation_needs_a_recorded_head() {
        let entries = chain(6);
        let head = verify(&entries).unwrap();
        let truncated = &entries[..4];
        assert!(verify(truncated).is_ok());
        assert!(matches!(
            verify_head(truncated, head),
            Err(Broken::HeadMismatch { .. })
        ));
    }
}
