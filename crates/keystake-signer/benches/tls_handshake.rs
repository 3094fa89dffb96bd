//! Criterion bench: full mutual-TLS 1.3 handshakes (no resumption), server key in SoftHSM2
//! (`ServerKey::Hsm`, the default) against a PEM key file (`ServerKey::File`, the opt-out).
//! In memory (no sockets), so the figure is the CPU cost of a handshake on both sides; the
//! difference between the two is the HSM signature. Also the bare signature of each.
//! Run: `cargo bench -p keystake-signer --bench tls_handshake` (figures in docs/performance.md).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keystake_signer::hsm::pkcs11::{write_softhsm2_conf, Pkcs11Config, Pkcs11Sealer};
use keystake_signer::hsm::signing_key::{
    ensure_pkcs11_key, HsmSigningKey, KeyRole, Pkcs11SigningKey,
};
use keystake_signer::net::pki::{self, GeneratedPki, Overwrite};
use keystake_signer::net::tls::{client_config, server_config, HsmTlsKey};
use rustls::{ClientConnection, ServerConnection};
use secrecy::SecretString;

fn hsm_key(dir: &std::path::Path) -> Arc<dyn HsmSigningKey> {
    let conf = write_softhsm2_conf(dir).expect("softhsm2.conf");
    std::env::set_var("SOFTHSM2_CONF", conf);
    let config = Pkcs11Config {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        token_label: "bench-tls".into(),
        key_label: "keystake-seal".into(),
        sessions: 2,
    };
    let (so, user) = (
        SecretString::from("so-1234"),
        SecretString::from("user-1234"),
    );
    Pkcs11Sealer::initialize(&config, &so, &user).expect("initialize");
    ensure_pkcs11_key(&config, &user, KeyRole::Tls).expect("TLS key");
    let sealer = Arc::new(Pkcs11Sealer::open(&config, &user).expect("open"));
    Arc::new(Pkcs11SigningKey::open(sealer, KeyRole::Tls).expect("open TLS key"))
}

/// One full handshake between fresh connections, bytes pumped in memory.
fn handshake(server: &Arc<rustls::ServerConfig>, client: &Arc<rustls::ClientConfig>) {
    let mut client_conn =
        ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut server_conn = ServerConnection::new(server.clone()).unwrap();
    let mut buffer = Vec::new();
    while client_conn.is_handshaking() || server_conn.is_handshaking() {
        buffer.clear();
        while client_conn.wants_write() {
            client_conn.write_tls(&mut buffer).unwrap();
        }
        let mut input = buffer.as_slice();
        while !input.is_empty() {
            server_conn.read_tls(&mut input).unwrap();
        }
        server_conn.process_new_packets().expect("server side");
        buffer.clear();
        while server_conn.wants_write() {
            server_conn.write_tls(&mut buffer).unwrap();
        }
        let mut input = buffer.as_slice();
        while !input.is_empty() {
            client_conn.read_tls(&mut input).unwrap();
        }
        client_conn.process_new_packets().expect("client side");
    }
}

fn client_for(pki: &GeneratedPki) -> Arc<rustls::ClientConfig> {
    let issued = pki.client("client").expect("client");
    let mut config = (*client_config(&pki.ca_cert, &issued.cert, &issued.key).unwrap()).clone();
    // Every iteration a full handshake: resumption would skip the server's signature.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn handshakes(c: &mut Criterion) {
    let hsm_dir = tempfile::tempdir().unwrap();
    let key = hsm_key(hsm_dir.path());
    let clients = ["client".to_owned()];
    let file_dir = tempfile::tempdir().unwrap();
    let file_pki = pki::generate(file_dir.path(), &[], &clients, 1, Overwrite::Refuse).unwrap();
    let token_dir = tempfile::tempdir().unwrap();
    let token_pki = pki::generate_with_server_key(
        token_dir.path(),
        &[],
        &clients,
        1,
        Overwrite::Refuse,
        Some(HsmTlsKey(key.clone())),
    )
    .unwrap();

    let mut group = c.benchmark_group("mtls_handshake");
    for (name, pki) in [("file_key", &file_pki), ("softhsm2_key", &token_pki)] {
        let server = server_config(&pki.tls_files()).unwrap();
        let client = client_for(pki);
        group.bench_function(name, |b| b.iter(|| handshake(&server, &client)));
    }
    group.finish();

    let mut group = c.benchmark_group("p256_sign");
    group.bench_function("softhsm2", |b| {
        b.iter(|| key.sign_sha256(b"transcript").unwrap())
    });
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let file_key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    group.bench_function("ring_in_process", |b| {
        b.iter(|| file_key.sign(&rng, b"transcript").unwrap())
    });
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
