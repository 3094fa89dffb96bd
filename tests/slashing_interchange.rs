//! The 38 cases of the EIP-3076 interchange conformance suite (eth-clients v5.3.0) against the
//! real SQLite store, each followed by export → import into a fresh database → export → compare.
//!
//! How a check is judged (design.md §5): where `should_succeed` and `should_succeed_complete`
//! agree, the answer must equal them. Where they differ, this design answers `should_succeed`
//! when the request is at or below the key's imported watermark (imports raise the watermark over
//! the gaps they leave), and `should_succeed_complete` in two situations: an identical re-request
//! of a message already in the history (same slot or target, same signing root) is answered
//! again, and above the watermark our own complete history decides, so an out-of-order request
//! below our own earlier signatures is signed when no rule forbids it.

use std::path::Path;

use keystake_core::slashing::interchange::Interchange;
use keystake_core::slashing::Safe;
use keystake_core::types::{BlsPublicKey, Epoch, Root, Slot};
use keystake_signer::store::{Refusal, SlashingRequest, Store};
use serde_json::Value;

use crate::common::vector_files;

fn u64_field(value: &Value, field: &str) -> u64 {
    value[field].as_str().unwrap().parse().unwrap()
}

fn root_field(value: &Value) -> Root {
    value["signing_root"]
        .as_str()
        .map(|r| r.parse().unwrap())
        .unwrap_or(Root([0; 32]))
}

/// Is this request an identical re-request of something the store holds, or above the key's
/// watermark (where our own complete history decides)?
fn complete_history_decides(store: &Store, key: &BlsPublicKey, request: &SlashingRequest) -> bool {
    let Some(history) = store.history(key).unwrap() else {
        return true;
    };
    let w = history.watermark;
    let above_watermark = match *request {
        SlashingRequest::Block { slot, .. } => w.block_slot.is_none_or(|m| slot > m),
        SlashingRequest::Attestation { source, target, .. } => {
            w.attestation_source.is_none_or(|m| source >= m)
                && w.attestation_target.is_none_or(|m| target > m)
        }
    };
    above_watermark
        || match *request {
            SlashingRequest::Block { slot, signing_root } => history
                .blocks
                .iter()
                .any(|b| b.slot == slot && b.signing_root == Some(signing_root)),
            SlashingRequest::Attestation {
                source,
                target,
                signing_root,
            } => history.attestations.iter().any(|a| {
                a.source == source && a.target == target && a.signing_root == Some(signing_root)
            }),
        }
}

#[derive(Default)]
struct CaseReport {
    checks: usize,
    imports: usize,
    /// Checks where `should_succeed` and `should_succeed_complete` differ.
    differing: usize,
    /// … and where we answered `should_succeed_complete` (signed).
    complete_answers: usize,
    /// Cases where a differing check was newly signed (not a re-sign): design.md §5 says one.
    complete_cases: std::collections::BTreeSet<String>,
}

fn run_case(name: &str, case: &Value, dir: &Path) -> CaseReport {
    let gvr: Root = case["genesis_validators_root"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(&dir.join(format!("{name}.sqlite"))).unwrap();
    store.bind_genesis_validators_root(gvr).unwrap();
    let mut report = CaseReport::default();
    for (step_index, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        let text = serde_json::to_string(&step["interchange"]).unwrap();
        let imported = Interchange::from_json(&text)
            .map_err(|e| e.to_string())
            .and_then(|i| {
                store
                    .import_interchange(&i, None)
                    .map_err(|e| e.to_string())
            });
        assert_eq!(
            imported.is_ok(),
            step["should_succeed"].as_bool().unwrap(),
            "{name} step {step_index}: import gave {imported:?}"
        );
        report.imports += 1;
        let blocks = step["blocks"].as_array().unwrap().iter().map(|b| {
            (
                b,
                SlashingRequest::Block {
                    slot: Slot(u64_field(b, "slot")),
                    signing_root: root_field(b),
                },
            )
        });
        let attestations = step["attestations"].as_array().unwrap().iter().map(|a| {
            (
                a,
                SlashingRequest::Attestation {
                    source: Epoch(u64_field(a, "source_epoch")),
                    target: Epoch(u64_field(a, "target_epoch")),
                    signing_root: root_field(a),
                },
            )
        });
        for (check_index, (spec, request)) in blocks.chain(attestations).enumerate() {
            let key: BlsPublicKey = spec["pubkey"].as_str().unwrap().parse().unwrap();
            let should = spec["should_succeed"].as_bool().unwrap();
            let complete = spec["should_succeed_complete"].as_bool().unwrap();
            let expected = if should == complete {
                should
            } else if complete_history_decides(&store, &key, &request) {
                complete
            } else {
                should
            };
            let outcome = store
                .check_and_record_blocking(key, Some(gvr), request)
                .unwrap();
            assert_eq!(
                outcome.is_ok(),
                expected,
                "{name} step {step_index} check {check_index} {request:?}: got {outcome:?}"
            );
            if let Err(refusal) = outcome {
                assert!(
                    matches!(refusal, Refusal::Slashable(_)),
                    "{name}: refusal {refusal:?}"
                );
            }
            if should != complete {
                report.differing += 1;
                if outcome.is_ok() {
                    report.complete_answers += 1;
                    if outcome == Ok(Safe::Valid) {
                        report.complete_cases.insert(name.to_owned());
                    }
                }
            }
            report.checks += 1;
        }
    }
    // Export → import into a fresh database → export → compare.
    let first = store.export_interchange(None).unwrap();
    let reparsed = Interchange::from_json(&first.to_json()).unwrap();
    assert_eq!(reparsed, first, "{name}: export does not survive JSON");
    let fresh = Store::open(&dir.join(format!("{name}.fresh.sqlite"))).unwrap();
    fresh.import_interchange(&reparsed, None).unwrap();
    let second = fresh.export_interchange(None).unwrap();
    assert_eq!(first, second, "{name}: export → import → export differs");
    // The fresh copy protects at least as much: every message the first store holds with a
    // root is answered SameData or refused, never newly Valid.
    for record in &first.data {
        for block in record
            .signed_blocks
            .iter()
            .filter(|b| b.signing_root.is_some())
        {
            let outcome = fresh
                .check_and_record_blocking(
                    record.pubkey,
                    Some(gvr),
                    SlashingRequest::Block {
                        slot: block.slot,
                        signing_root: Root([0xfe; 32]),
                    },
                )
                .unwrap();
            assert!(outcome.is_err(), "{name}: fresh copy signs over {block:?}");
        }
    }
    report
}

#[test]
fn eip3076_interchange_suite() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, Value)> = vector_files("slashing-interchange")
        .into_iter()
        .filter(|(name, _)| name != "interchange-schema")
        .collect();
    assert_eq!(cases.len(), 38, "the suite has 38 cases");
    let mut total = CaseReport::default();
    for (name, case) in &cases {
        let report = run_case(name, case, dir.path());
        total.checks += report.checks;
        total.imports += report.imports;
        total.differing += report.differing;
        total.complete_answers += report.complete_answers;
        total.complete_cases.extend(report.complete_cases);
    }
    println!(
        "EIP-3076 suite: {} cases, {} imports, {} checks passed; {} checks differ between \
         should_succeed and should_succeed_complete, {} answered as complete (newly signed in {:?})",
        cases.len(),
        total.imports,
        total.checks,
        total.differing,
        total.complete_answers,
        total.complete_cases
    );
    assert!(total.checks > 100 && total.imports >= 38);
    // design.md §5: `should_succeed` everywhere except one case where our complete own history
    // allows more (re-signs of identical data aside).
    assert_eq!(total.complete_cases.len(), 1, "{:?}", total.complete_cases);
}
