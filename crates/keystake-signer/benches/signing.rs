//! Criterion benches for the pure signing path and the HSM adapter: signing root per Web3Signer
//! type (from the independent vectors), BLS sign, and a SoftHSM2 unseal (per-signature cost).
//! Run: `cargo bench --bench signing` (figures in docs/performance.md).

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keystake_core::bls::SecretKey;
use keystake_core::consensus::Network;
use keystake_core::request::parse_sign_request;
use keystake_signer::hsm::pkcs11::{write_softhsm2_conf, Pkcs11Config, Pkcs11Sealer};
use keystake_signer::hsm::{SealContext, Sealer};
use secrecy::SecretString;

fn vectors() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/web3signer");
    let mut seen = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("vectors") {
        let path = entry.expect("entry").path();
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        // One case per type/version (key 0), e.g. "block_v2_deneb".
        if let Some(kind) = name.strip_suffix("__key0") {
            seen.insert(
                kind.to_owned(),
                serde_json::to_vec(&case["request"]).unwrap(),
            );
        }
    }
    seen.into_iter().collect()
}

fn signing_roots(c: &mut Criterion) {
    let network = Network::mainnet();
    let mut group = c.benchmark_group("signing_root");
    for (name, body) in vectors() {
        group.bench_function(&name, |b| {
            b.iter(|| parse_sign_request(black_box(&body), &network).expect("valid"))
        });
    }
    group.finish();
}

/// The pure EIP-3076 rules over an in-memory history of 1,000 attestations and blocks (the
/// reference model; the SQLite store is measured in benches/slashing.rs).
fn slashing_check(c: &mut Criterion) {
    use keystake_core::slashing::{
        check_attestation, check_block, MemoryHistory, SignedAttestation, SignedBlock,
    };
    use keystake_core::types::{Epoch, Root, Slot};
    let history = MemoryHistory {
        attestations: (0..1000u64)
            .map(|e| SignedAttestation {
                source: Epoch(e),
                target: Epoch(e + 1),
                signing_root: Some(Root([1; 32])),
            })
            .collect(),
        blocks: (0..1000u64)
            .map(|s| SignedBlock {
                slot: Slot(s * 32),
                signing_root: Some(Root([2; 32])),
            })
            .collect(),
        ..Default::default()
    };
    c.bench_function("slashing_check/attestation_1000_history", |b| {
        b.iter(|| check_attestation(&history, Epoch(1000), Epoch(1001), black_box(Root([3; 32]))))
    });
    c.bench_function("slashing_check/block_1000_history", |b| {
        b.iter(|| check_block(&history, Slot(32_000), black_box(Root([3; 32]))))
    });
}

fn bls_sign(c: &mut Criterion) {
    let key = SecretKey::random(&mut rand::rngs::OsRng);
    let root = [7u8; 32];
    c.bench_function("bls_sign", |b| b.iter(|| key.sign(black_box(&root))));
}

fn softhsm_unseal(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_softhsm2_conf(dir.path()).expect("softhsm2.conf");
    std::env::set_var("SOFTHSM2_CONF", conf);
    let config = Pkcs11Config {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        token_label: "bench".into(),
        key_label: "bench-key".into(),
        sessions: 1,
    };
    let so = SecretString::from("so-pin-bench".to_owned());
    let user = SecretString::from("user-pin-bench".to_owned());
    Pkcs11Sealer::initialize(&config, &so, &user).expect("initialize");
    let sealer = Pkcs11Sealer::open(&config, &user).expect("open");
    let key = SecretKey::random(&mut rand::rngs::OsRng);
    let context = SealContext {
        share_public_key: key.public_key(),
        share_index: None,
        group_public_key: None,
    };
    let sealed = sealer.seal(&key.to_bytes(), &context).expect("seal");
    c.bench_function("softhsm_unseal", |b| {
        b.iter(|| sealer.unseal(black_box(&sealed), &context).expect("unseal"))
    });
    c.bench_function("unseal_and_sign", |b| {
        b.iter(|| {
            let secret = sealer.unseal(&sealed, &context).expect("unseal");
            SecretKey::from_zeroizing(secret)
                .expect("key")
                .sign(&[9u8; 32])
        })
    });
}

criterion_group!(
    benches,
    signing_roots,
    slashing_check,
    bls_sign,
    softhsm_unseal
);
criterion_main!(benches);
