//! Wall time of a whole reshare in one process (issue 13): a 3-of-4 group hands V = 1 and 100
//! validators to a 3-of-5 group (the four old members plus one new), software keys, every
//! message delivered at once. This is the protocol's CPU cost summed over all five seats on one
//! core (four dealings, every check by every seat, the new lock); an appliance does 1/4 of the
//! dealing but the same checks, plus HSM and network time.
//! Run with `cargo bench -p keystake-core --bench reshare`.
#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use keystake_core::dkg::{
    holding_of, local_setup, run_local, run_local_reshare, BroadcastSigner, LocalParty,
    Participant, ReshareDefinition, SoftwareDecryptor, SoftwareSigner, RESHARE_DEFINITION_FORMAT,
};
use keystake_core::types::{ShareIndex, Threshold};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use zeroize::Zeroizing;

fn reshares(c: &mut Criterion) {
    let mut group = c.benchmark_group("reshare");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.warm_up_time(Duration::from_millis(1));
    for validators in [1u32, 100] {
        let mut rng = StdRng::seed_from_u64(u64::from(validators));
        let (definition, old) = local_setup(3, 4, validators, "hoodi", &mut rng).expect("setup");
        let results = run_local(&definition, &old).expect("dkg");
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut_slice());
        let fresh = LocalParty {
            signer: SoftwareSigner::random(&mut rng),
            decryptor: SoftwareDecryptor::random(&mut rng),
            seed,
        };
        let mut participants = results[0].lock.definition.participants.clone();
        participants.push(Participant {
            endpoint: "https://127.0.0.1:9100".into(),
            enrolment_public_key: fresh.decryptor.public_key(),
            identity_public_key: fresh.signer.identity(),
            tls_certificate: vec![100; 16],
        });
        let reshare = ReshareDefinition {
            format: RESHARE_DEFINITION_FORMAT.to_owned(),
            previous: results[0].lock.clone(),
            dealers: (1..=4)
                .map(|i| ShareIndex::new(i).expect("index"))
                .collect(),
            threshold: Threshold::new(3).expect("threshold"),
            participants,
        };
        let parties: Vec<&LocalParty> = old.iter().chain(std::iter::once(&fresh)).collect();
        group.bench_with_input(
            BenchmarkId::new("3-of-4 to 3-of-5", format!("V={validators}")),
            &validators,
            |b, _| {
                b.iter_batched(
                    || {
                        let mut holdings: Vec<_> = results
                            .iter()
                            .map(|r| Some(holding_of(r).expect("holding")))
                            .collect();
                        holdings.push(None);
                        holdings
                    },
                    |holdings| {
                        run_local_reshare(&reshare, &parties, holdings, 1000).expect("reshare")
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, reshares);
criterion_main!(benches);
