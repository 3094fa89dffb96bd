//! Slashing-protection throughput: check-and-record per second for one key and for 10 000 keys,
//! with and without group commit (bursts of 64 concurrent requests, each a new attestation, on
//! a real SQLite file with `synchronous=FULL`), and an EIP-3076 import of 10 000 validators ×
//! 100 attestations into a fresh database, and what opening that database costs now that the
//! start-up check is `PRAGMA integrity_check` (issue 17) instead of `quick_check`. Run with
//! `cargo bench --bench slashing`.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use keystake_core::slashing::interchange::{
    Interchange, InterchangeAttestation, InterchangeRecord,
};
use keystake_core::slashing::Safe;
use keystake_core::types::{BlsPublicKey, Epoch, Root};
use keystake_signer::store::{SlashingRequest, Store, StoreOptions};

const BURST: u64 = 64;

fn key(index: u64) -> BlsPublicKey {
    let mut bytes = [0u8; 48];
    bytes[..8].copy_from_slice(&index.to_le_bytes());
    bytes[47] = 1;
    BlsPublicKey(bytes)
}

fn check_and_record(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("check_and_record");
    group.throughput(Throughput::Elements(BURST));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for (keys, label) in [(1u64, "1_key"), (10_000, "10k_keys")] {
        for group_commit in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let options = StoreOptions {
                group_commit,
                ..StoreOptions::default()
            };
            let store =
                Arc::new(Store::open_with(&dir.path().join("bench.sqlite"), options).unwrap());
            let counter = Arc::new(AtomicU64::new(0));
            let name = format!(
                "{label}/{}",
                if group_commit {
                    "group_commit"
                } else {
                    "one_txn_per_request"
                }
            );
            group.bench_function(name, |b| {
                b.iter(|| {
                    runtime.block_on(async {
                        let mut tasks = Vec::with_capacity(BURST as usize);
                        for _ in 0..BURST {
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            let (k, epoch) = (n % keys, 1 + n / keys);
                            let store = store.clone();
                            tasks.push(tokio::spawn(async move {
                                store
                                    .check_and_record(
                                        key(k),
                                        None,
                                        SlashingRequest::Attestation {
                                            source: Epoch(epoch - 1),
                                            target: Epoch(epoch),
                                            signing_root: Root([7; 32]),
                                        },
                                    )
                                    .await
                            }));
                        }
                        for task in tasks {
                            assert_eq!(task.await.unwrap().unwrap(), Ok(Safe::Valid));
                        }
                    })
                })
            });
        }
    }
    group.finish();
}

/// 10 000 validators × 100 attestations, as the import and open benchmarks use.
fn ten_thousand_validator_history() -> Interchange {
    let validators = 10_000u64;
    let attestations = 100u64;
    let mut interchange = Interchange::new(Root([0x44; 32]));
    for v in 0..validators {
        interchange.data.push(InterchangeRecord {
            pubkey: key(v),
            signed_blocks: Vec::new(),
            signed_attestations: (0..attestations)
                .map(|e| InterchangeAttestation {
                    source_epoch: Epoch(e),
                    target_epoch: Epoch(e + 1),
                    signing_root: Some(Root([(e % 251) as u8; 32])),
                })
                .collect(),
        });
    }
    interchange
}

fn import_interchange(c: &mut Criterion) {
    let interchange = ten_thousand_validator_history();
    let (validators, attestations) = (10_000u64, 100u64);
    let mut group = c.benchmark_group("interchange_import");
    group.sample_size(10);
    group.throughput(Throughput::Elements(validators * attestations));
    group.bench_function("10k_validators_x_100_attestations", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(&dir.path().join("import.sqlite")).unwrap();
                (dir, store)
            },
            |(dir, store)| {
                let summary = store.import_interchange(&interchange, None).unwrap();
                assert_eq!(
                    summary.attestations_imported as u64,
                    validators * attestations
                );
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Start-up cost of the integrity check on a 10k-validator history (1 M attestations): the whole
/// `Store::open` (what `serve` and every CLI command pay), and the two pragmas alone on the same
/// file for comparison.
fn open_with_integrity_check(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.sqlite");
    {
        let store = Store::open(&path).unwrap();
        store
            .import_interchange(&ten_thousand_validator_history(), None)
            .unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    println!("database: {} MiB", size / (1 << 20));
    let mut group = c.benchmark_group("open_10k_validators_x_100_attestations");
    group.sample_size(10);
    group.bench_function("store_open_with_integrity_check", |b| {
        b.iter(|| drop(Store::open(&path).unwrap()))
    });
    let conn = rusqlite::Connection::open(&path).unwrap();
    for pragma in ["integrity_check", "quick_check"] {
        group.bench_function(pragma, |b| {
            b.iter(|| {
                let result: String = conn
                    .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
                    .unwrap();
                assert_eq!(result, "ok");
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    check_and_record,
    import_interchange,
    open_with_integrity_check
);
criterion_main!(benches);
