//! Property test: random streams of blocks, attestations, interchange imports and prunes of old
//! attestations over several keys, sent to the real SQLite store in bursts (so group commit puts
//! several into one transaction), compared with a small reference model written from the rules
//! of design.md §5. The store must give the model's answer every time — never accept a
//! slashable pair, never refuse what the rules allow — and no two messages it released may be
//! slashable together, pruned or not.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use keystake_core::slashing::interchange::{
    Interchange, InterchangeAttestation, InterchangeBlock, InterchangeRecord,
};
use keystake_core::slashing::Safe;
use keystake_core::types::{BlsPublicKey, Epoch, Root, Slot};
use keystake_signer::store::{CheckOutcome, SlashingRequest, Store, StoreError};
use proptest::prelude::*;

const KEYS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Block {
        slot: u64,
        root: Option<u8>,
    },
    Att {
        source: u64,
        target: u64,
        root: Option<u8>,
    },
}

#[derive(Debug, Clone)]
enum Op {
    /// A burst of signing requests sent together.
    Burst(Vec<(u8, Msg)>),
    /// An interchange import for one key.
    Import(u8, Vec<Msg>),
    /// `slashing prune --keep-epochs N`: every key's attestations older than its newest N
    /// epochs go, the watermark raised over them.
    Prune(u64),
}

/// Is the pair slashable (EIP-3076 / consensus rules), treating an unknown root as different?
fn slashable(a: &Msg, b: &Msg) -> bool {
    let differ = |x: &Option<u8>, y: &Option<u8>| x.is_none() || y.is_none() || x != y;
    match (a, b) {
        (Msg::Block { slot: s1, root: r1 }, Msg::Block { slot: s2, root: r2 }) => {
            s1 == s2 && differ(r1, r2)
        }
        (
            Msg::Att {
                source: s1,
                target: t1,
                root: r1,
            },
            Msg::Att {
                source: s2,
                target: t2,
                root: r2,
            },
        ) => {
            (t1 == t2 && (differ(r1, r2) || s1 != s2))
                || (s1 < s2 && t2 < t1)
                || (s2 < s1 && t1 < t2)
        }
        _ => false,
    }
}

/// The reference model of one key: what it holds and its watermark.
#[derive(Default, Clone)]
struct Model {
    records: Vec<Msg>,
    imported: Vec<Msg>,
    min_slot: Option<u64>,
    min_source: Option<u64>,
    min_target: Option<u64>,
}

impl Model {
    /// (allowed, record it)
    fn decide(&self, msg: &Msg) -> (bool, bool) {
        match *msg {
            Msg::Block { slot, .. } => {
                let at_slot: Vec<_> = self
                    .records
                    .iter()
                    .filter(|m| matches!(m, Msg::Block { slot: s, .. } if *s == slot))
                    .collect();
                if at_slot.iter().any(|m| slashable(m, msg)) {
                    return (false, false);
                }
                if !at_slot.is_empty() {
                    return (true, false);
                }
                if self.min_slot.is_some_and(|w| slot <= w) {
                    return (false, false);
                }
                (true, true)
            }
            Msg::Att { source, target, .. } => {
                if source > target {
                    return (false, false);
                }
                let same_target: Vec<_> = self
                    .records
                    .iter()
                    .filter(|m| matches!(m, Msg::Att { target: t, .. } if *t == target))
                    .collect();
                if same_target.iter().any(|m| slashable(m, msg)) {
                    return (false, false);
                }
                // The identical message is answered again (it exists already).
                if !same_target.is_empty() {
                    return (true, false);
                }
                if self.records.iter().any(|m| slashable(m, msg)) {
                    return (false, false);
                }

                if self.min_source.is_some_and(|w| source < w)
                    || self.min_target.is_some_and(|w| target <= w)
                {
                    return (false, false);
                }
                (true, true)
            }
        }
    }

    /// The prune as docs/slashing.md states it: below the key's newest target minus `keep`,
    /// attestations go and the watermark rises to the greatest source and target removed.
    fn prune(&mut self, keep: u64) {
        let target_of = |m: &Msg| match *m {
            Msg::Att { target, .. } => Some(target),
            Msg::Block { .. } => None,
        };
        let Some(newest) = self.records.iter().filter_map(target_of).max() else {
            return;
        };
        let cut = newest.saturating_sub(keep);
        let (removed, kept): (Vec<Msg>, Vec<Msg>) = self
            .records
            .iter()
            .partition(|m| target_of(m).is_some_and(|t| t < cut));
        for msg in removed {
            if let Msg::Att { source, target, .. } = msg {
                self.min_source = self.min_source.max(Some(source));
                self.min_target = self.min_target.max(Some(target));
            }
        }
        self.records = kept;
    }

    fn import(&mut self, msgs: &[Msg]) {
        for msg in msgs {
            if !self.records.contains(msg) {
                self.records.push(*msg);
            }
            self.imported.push(*msg);
            match *msg {
                Msg::Block { slot, .. } => self.min_slot = self.min_slot.max(Some(slot)),
                Msg::Att { source, target, .. } => {
                    self.min_source = self.min_source.max(Some(source));
                    self.min_target = self.min_target.max(Some(target));
                }
            }
        }
    }
}

fn key(k: u8) -> BlsPublicKey {
    BlsPublicKey([k + 1; 48])
}

/// Signing roots derived from the whole message, as real ones are: the same attestation data
/// always has the same root, different data never does.
fn block_root(slot: u64, r: u8) -> Root {
    let mut bytes = [0xb0; 32];
    bytes[..8].copy_from_slice(&slot.to_le_bytes());
    bytes[8] = r;
    Root(bytes)
}

fn attestation_root(source: u64, target: u64, r: u8) -> Root {
    let mut bytes = [0xa0; 32];
    bytes[..8].copy_from_slice(&source.to_le_bytes());
    bytes[8..16].copy_from_slice(&target.to_le_bytes());
    bytes[16] = r;
    Root(bytes)
}

fn request(msg: &Msg) -> SlashingRequest {
    match *msg {
        Msg::Block { slot, root: r } => SlashingRequest::Block {
            slot: Slot(slot),
            signing_root: block_root(slot, r.expect("requests carry a root")),
        },
        Msg::Att {
            source,
            target,
            root: r,
        } => SlashingRequest::Attestation {
            source: Epoch(source),
            target: Epoch(target),
            signing_root: attestation_root(source, target, r.expect("requests carry a root")),
        },
    }
}

fn signing_msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (0u64..12, 0u8..3).prop_map(|(slot, r)| Msg::Block {
            slot,
            root: Some(r)
        }),
        (0u64..8, 0u64..8, 0u8..3).prop_map(|(source, target, r)| Msg::Att {
            source,
            target,
            root: Some(r)
        }),
    ]
}

fn imported_msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (0u64..12, proptest::option::of(0u8..3)).prop_map(|(slot, root)| Msg::Block { slot, root }),
        (0u64..8, 0u64..8, proptest::option::of(0u8..3)).prop_map(|(source, target, root)| {
            Msg::Att {
                source,
                target,
                root,
            }
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => proptest::collection::vec((0..KEYS, signing_msg()), 1..8).prop_map(Op::Burst),
        2 => (0..KEYS, proptest::collection::vec(imported_msg(), 0..4))
            .prop_map(|(k, msgs)| Op::Import(k, msgs)),
        1 => (0u64..4).prop_map(Op::Prune),
    ]
}

fn interchange_for(k: u8, msgs: &[Msg]) -> Interchange {
    let mut interchange = Interchange::new(Root([0x77; 32]));
    let mut record = InterchangeRecord {
        pubkey: key(k),
        signed_blocks: Vec::new(),
        signed_attestations: Vec::new(),
    };
    for msg in msgs {
        match *msg {
            Msg::Block { slot, root: r } => record.signed_blocks.push(InterchangeBlock {
                slot: Slot(slot),
                signing_root: r.map(|r| block_root(slot, r)),
            }),
            Msg::Att {
                source,
                target,
                root: r,
            } => record.signed_attestations.push(InterchangeAttestation {
                source_epoch: Epoch(source),
                target_epoch: Epoch(target),
                signing_root: r.map(|r| attestation_root(source, target, r)),
            }),
        }
    }
    interchange.data.push(record);
    interchange
}

type Pending = Pin<Box<dyn Future<Output = Result<CheckOutcome, StoreError>> + Send>>;

/// Submit every request of a burst to the writer in order before waiting for any answer, so
/// they queue up together (and usually share one transaction).
fn send_burst(store: &std::sync::Arc<Store>, burst: &[(u8, Msg)]) -> Vec<CheckOutcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut pending: Vec<(Pending, Option<Result<CheckOutcome, StoreError>>)> = burst
        .iter()
        .map(|(k, msg)| {
            let store = store.clone();
            let (k, request) = (*k, request(msg));
            let future: Pending =
                Box::pin(async move { store.check_and_record(key(k), None, request).await });
            (future, None)
        })
        .collect();
    // The first poll sends the job to the writer; order of polls = order of the queue.
    let mut cx = Context::from_waker(Waker::noop());
    for (future, done) in &mut pending {
        if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            *done = Some(result);
        }
    }
    runtime.block_on(async {
        let mut out = Vec::new();
        for (future, done) in pending {
            let result = match done {
                Some(result) => result,
                None => future.await,
            };
            out.push(result.unwrap());
        }
        out
    })
}

fn run_stream(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(&dir.path().join("db")).unwrap());
    store
        .bind_genesis_validators_root(Root([0x77; 32]))
        .unwrap();
    let mut models = vec![Model::default(); KEYS as usize];
    let mut released: Vec<Vec<Msg>> = vec![Vec::new(); KEYS as usize];
    for op in ops {
        match op {
            Op::Import(k, msgs) => {
                store
                    .import_interchange(&interchange_for(*k, msgs), None)
                    .unwrap();
                models[*k as usize].import(msgs);
            }
            Op::Prune(keep) => {
                store.prune_attestations(*keep, false).unwrap();
                for model in &mut models {
                    model.prune(*keep);
                }
            }
            Op::Burst(burst) => {
                let outcomes = send_burst(&store, burst);
                for ((k, msg), outcome) in burst.iter().zip(outcomes) {
                    let model = &mut models[*k as usize];
                    let (allowed, record) = model.decide(msg);
                    prop_assert_eq!(
                        outcome.is_ok(),
                        allowed,
                        "key {} {:?}: store {:?}, model allowed={}",
                        k,
                        msg,
                        outcome,
                        allowed
                    );
                    if allowed {
                        prop_assert_eq!(
                            outcome,
                            Ok(if record { Safe::Valid } else { Safe::SameData })
                        );
                    }
                    if record {
                        // A newly signed message is never slashable with anything released or
                        // imported before it.
                        for earlier in released[*k as usize].iter().chain(&model.imported) {
                            prop_assert!(
                                !slashable(earlier, msg),
                                "released {:?} is slashable with {:?}",
                                msg,
                                earlier
                            );
                        }
                        released[*k as usize].push(*msg);
                    }
                    if record {
                        model.records.push(*msg);
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..20)) {
        run_stream(&ops)?;
    }
}
