//! Where a BLS signature's time goes (issue 16): a whole `sign`, hash-to-G2 alone
//! (`MessagePoint::hash`), and the signature on an already hashed message (`sign_hashed`, what the
//! appliance does on a message-cache hit), and the stack wipe after it. Run with `cargo bench -p keystake-core --bench bls`.
#![forbid(unsafe_code)]

use criterion::{criterion_group, criterion_main, Criterion};
use keystake_core::bls::{MessagePoint, MessageTable, SecretKey, DST};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn signing(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(16);
    let key = SecretKey::random(&mut rng);
    let root = [0x5a_u8; 32];
    let point = MessagePoint::hash(&root, DST);
    assert_eq!(
        key.sign(&root),
        key.sign_hashed(&point),
        "the two halves sign like blst"
    );
    let table = MessageTable::build(&point);
    assert_eq!(
        key.sign(&root),
        key.sign_with_table(&table),
        "the table signs like blst"
    );
    let mut group = c.benchmark_group("bls");
    group.bench_function("sign", |b| b.iter(|| key.sign(std::hint::black_box(&root))));
    group.bench_function("hash_to_g2", |b| {
        b.iter(|| MessagePoint::hash(std::hint::black_box(&root), DST))
    });
    group.bench_function("sign_hashed", |b| {
        b.iter(|| key.sign_hashed(std::hint::black_box(&point)))
    });
    group.bench_function("build_table", |b| {
        b.iter(|| MessageTable::build(std::hint::black_box(&point)))
    });
    group.bench_function("sign_with_table", |b| {
        b.iter(|| key.sign_with_table(std::hint::black_box(&table)))
    });
    // What every signature pays after its secret work (issue 17 item 14's 64 KiB stack wipe).
    group.bench_function("wipe_stack", |b| b.iter(keystake_core::wipe::wipe_stack));
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
