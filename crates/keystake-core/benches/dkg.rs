//! Wall time of a whole DKG ceremony in one process (issue 12): n = 4, 7, 16 participants with
//! t = ⌊2n/3⌋ + 1, V = 1 and 100 validators, software identity and enrolment keys, every message
//! delivered at once. This is the protocol's CPU cost (dealing, proofs, encryption, checks,
//! lock assembly and verification summed over all n participants, on one core); an appliance
//! does 1/n of the dealing but the same checks, plus HSM and network time.
//! Run with `cargo bench -p keystake-core --bench dkg`.
#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use keystake_core::dkg::{local_setup, run_local};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// V = 1 and 100; `KEYSTAKE_BENCH_VALIDATORS=10` (comma-separated) picks others, e.g. for a
/// quick profile.
fn bench_validators() -> Vec<u32> {
    std::env::var("KEYSTAKE_BENCH_VALIDATORS")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|v| v.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![1, 100])
}

fn ceremonies(c: &mut Criterion) {
    let mut group = c.benchmark_group("dkg_ceremony");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_millis(1));
    for n in [4u32, 7, 16] {
        let t = 2 * n / 3 + 1;
        for validators in bench_validators() {
            let mut rng = StdRng::seed_from_u64(u64::from(n * 1000 + validators));
            let (definition, parties) =
                local_setup(t, n, validators, "hoodi", &mut rng).expect("definition");
            group.bench_with_input(
                BenchmarkId::new(format!("{t}-of-{n}"), format!("V={validators}")),
                &validators,
                |b, _| b.iter(|| run_local(&definition, &parties).expect("ceremony")),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, ceremonies);
criterion_main!(benches);
