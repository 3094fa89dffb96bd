//! Combining partial signatures (issue #5): combines per second for t = 3, 7, 16, with every
//! partial verified first (the default of `combine`, which names culprits; one batch check over
//! all partials and the result) and optimistically
//! (interpolate t partials, verify only the result); and checking t partials of one message in one
//! batch (`verify_partials_batch`) against one pairing check each; `combine_with_keys`: the same
//! two modes with the share keys checked once (`ShareKeys`); `combine_cached`: the gRPC `Combine`
//! path, keys sent with every call and checked once per set (`ShareKeysCache`). Run with
//! `cargo bench -p keystake-core --bench threshold`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keystake_core::bls::SecretKey;
use keystake_core::threshold;
use keystake_core::types::{BlsPublicKey, BlsSignature, ShareIndex, Threshold};
use rand::rngs::StdRng;
use rand::SeedableRng;

struct Case {
    t: Threshold,
    share_public_keys: BTreeMap<ShareIndex, BlsPublicKey>,
    group_public_key: BlsPublicKey,
    partials: Vec<(ShareIndex, BlsSignature)>,
}

/// A t-of-(2t-1) split of a random key and t partial signatures of `message`.
fn case(t: u32, message: &[u8]) -> Case {
    let mut rng = StdRng::seed_from_u64(u64::from(t));
    let secret = SecretKey::random(&mut rng);
    let threshold = Threshold::new(t).unwrap();
    let split = threshold::split(&secret, threshold, 2 * t - 1, &mut rng).unwrap();
    Case {
        t: threshold,
        share_public_keys: split
            .shares
            .iter()
            .map(|share| (share.index(), share.public_key()))
            .collect(),
        group_public_key: secret.public_key(),
        partials: split
            .shares
            .iter()
            .take(t as usize)
            .map(|share| (share.index(), share.sign(message)))
            .collect(),
    }
}

/// One benchmark group: for t = 3, 7, 16, `run` in both modes (verify every partial, and
/// optimistic) on what `prepare` made of that case once, outside the measurement.
fn combine_group<P>(
    c: &mut Criterion,
    name: &str,
    prepare: impl Fn(&Case) -> P,
    run: impl Fn(&P, &Case, &[u8], bool, &mut StdRng) -> threshold::Combined,
) {
    let message = [0x5au8; 32];
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for t in [3u32, 7, 16] {
        let case = case(t, &message);
        let prepared = prepare(&case);
        for (label, verify_partials) in [("verify-partials", true), ("optimistic", false)] {
            group.bench_with_input(BenchmarkId::new(label, t), &case, |b, case| {
                let mut rng = StdRng::seed_from_u64(1);
                b.iter(|| run(&prepared, case, &message, verify_partials, &mut rng))
            });
        }
    }
    group.finish();
}

fn combine(c: &mut Criterion) {
    // Stateless: the share keys are decoded with every combine (the CLI).
    combine_group(
        c,
        "combine",
        |_| (),
        |_, case, message, verify_partials, rng| {
            threshold::combine(
                case.t,
                &case.share_public_keys,
                &case.group_public_key,
                message,
                &case.partials,
                verify_partials,
                rng,
            )
            .unwrap()
        },
    );
    // The share keys checked once per validator (a verified lock or manifest: `ShareKeys::verify`
    // outside the loop), as a long-running combiner (the forwarder) holds them.
    combine_group(
        c,
        "combine_with_keys",
        |case| {
            threshold::ShareKeys::verify(case.t, &case.share_public_keys, &case.group_public_key)
                .unwrap()
        },
        |keys, case, message, verify_partials, rng| {
            threshold::combine_with_keys(keys, message, &case.partials, verify_partials, rng)
                .unwrap()
        },
    );
    // The gRPC `Combine` path: the keys arrive as bytes with every call, as in `combine`, and
    // `ShareKeysCache` checks each key set once (at the first call, in the warm-up).
    combine_group(
        c,
        "combine_cached",
        |_| threshold::ShareKeysCache::default(),
        |cache, case, message, verify_partials, rng| {
            cache
                .combine(
                    case.t,
                    &case.share_public_keys,
                    &case.group_public_key,
                    message,
                    &case.partials,
                    verify_partials,
                    rng,
                )
                .unwrap()
        },
    );
}

fn verify_partials(c: &mut Criterion) {
    let message = [0x5bu8; 32];
    let mut group = c.benchmark_group("verify_partials");
    for t in [3u32, 7, 16] {
        let case = case(t, &message);
        let pairs: Vec<(BlsPublicKey, BlsSignature)> = case
            .partials
            .iter()
            .map(|(index, signature)| (case.share_public_keys[index], *signature))
            .collect();
        group.throughput(Throughput::Elements(u64::from(t)));
        group.bench_with_input(BenchmarkId::new("batch", t), &pairs, |b, pairs| {
            let mut rng = StdRng::seed_from_u64(2);
            b.iter(|| threshold::verify_partials_batch(&message, pairs, &mut rng).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("one-by-one", t), &pairs, |b, pairs| {
            b.iter(|| {
                assert!(pairs
                    .iter()
                    .all(|(key, signature)| keystake_core::bls::verify(key, &message, signature)))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, combine, verify_partials);
criterion_main!(benches);
