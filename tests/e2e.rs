//! The real binary on real parts: SoftHSM2 token, SQLite file, rcgen certificates, mutual TLS on
//! 127.0.0.1. One appliance per test, built with the CLI exactly as an operator would.

use std::path::Path;

use keystake_core::consensus::Network;
use keystake_core::request::{self, SlashingCheck};
use keystake_core::slashing::{self, MemoryHistory, SignedAttestation, SignedBlock};
use serde_json::Value;

use crate::common::*;

/// What a correct signer must answer for `request`, from a reference model of the key's history.
fn expected_outcome(
    histories: &mut std::collections::HashMap<String, MemoryHistory>,
    pubkey: &str,
    request_body: &Value,
) -> bool {
    let intent = request::parse_sign_request(
        &serde_json::to_vec(request_body).unwrap(),
        &Network::mainnet(),
    )
    .unwrap();
    let history = histories.entry(pubkey.to_owned()).or_default();
    let Some(check) = intent.slashing else {
        return true;
    };
    let verdict = match check {
        SlashingCheck::Block { slot } => {
            let Ok(v) = slashing::check_block(history, slot, intent.signing_root);
            v
        }
        SlashingCheck::Attestation { source, target } => {
            let Ok(v) = slashing::check_attestation(history, source, target, intent.signing_root);
            v
        }
    };
    match (verdict, check) {
        (Ok(slashing::Safe::Valid), SlashingCheck::Block { slot }) => {
            history.blocks.push(SignedBlock {
                slot,
                signing_root: Some(intent.signing_root),
            });
            true
        }
        (Ok(slashing::Safe::Valid), SlashingCheck::Attestation { source, target }) => {
            history.attestations.push(SignedAttestation {
                source,
                target,
                signing_root: Some(intent.signing_root),
            });
            true
        }
        (Ok(slashing::Safe::SameData), _) => true,
        (Err(_), _) => false,
    }
}

/// Every file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_signs_vectors_enforces_slashing_and_never_leaks_shares() {
    let appliance = Appliance::create();
    let secrets = vector_secret_keys();
    for (i, secret) in secrets.iter().enumerate() {
        let out = appliance.import_secret(&secret_key_from_hex(secret), &format!("key{i}"));
        assert!(out.contains("imported"), "{out}");
    }
    // A second import of the same key is reported as a duplicate, not an error.
    let out = appliance.import_secret(&secret_key_from_hex(&secrets[0]), "again");
    assert!(out.contains("duplicate"), "{out}");
    let listed = appliance.cli_ok(&["keys", "list"], &[]);
    assert_eq!(listed.lines().count(), 3, "{listed}");

    let (mut server, client) = appliance.serve();

    let up = client
        .request(http::Method::GET, "/upcheck", &[], None)
        .await
        .unwrap();
    assert_eq!((up.status, &up.body[..]), (200, &b"OK"[..]));
    let keys = public_keys(&client).await;
    assert_eq!(keys.len(), 3);

    // Every ATTESTATION and BLOCK_V2 vector, in file order through one slashing database.
    let mut histories = std::collections::HashMap::new();
    let mut signed = 0;
    for (name, case) in vector_files("web3signer") {
        let kind = case["request"]["type"].as_str().unwrap();
        if kind != "ATTESTATION" && kind != "BLOCK_V2" {
            continue;
        }
        let pubkey = case["pubkey"].as_str().unwrap();
        let allowed = expected_outcome(&mut histories, pubkey, &case["request"]);
        let (status, body) = sign(&client, pubkey, &case["request"]).await;
        if allowed {
            assert_eq!(status, 200, "{name}: {body}");
            assert_eq!(body["signature"], case["signature"], "{name}");
            signed += 1;
        } else {
            assert_eq!(status, 412, "{name} should be refused as slashable: {body}");
        }
    }
    assert!(signed >= 30, "only {signed} vector cases signed");

    // Slashing through the server: a fresh epoch range on key 1.
    let key1 = &keys[1];
    let (status, first) = sign(&client, key1, &attestation(500, 501, 1)).await;
    assert_eq!(status, 200, "{first}");
    let (status, body) = sign(&client, key1, &attestation(500, 501, 2)).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["rule"], "double_vote", "{body}");
    let (status, body) = sign(&client, key1, &attestation(499, 502, 3)).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["rule"], "new_surrounds_previous", "{body}");
    let (status, again) = sign(&client, key1, &attestation(500, 501, 1)).await;
    assert_eq!((status, &again), (200, &first), "identical re-request");
    let (status, body) = sign(&client, key1, &attestation(501, 502, 4)).await;
    assert_eq!(status, 200, "{body}");

    // Text answer when the client does not accept JSON (Web3Signer's Accept rule).
    let (status, text) = sign_as_text(&client, key1, &attestation(500, 501, 1)).await;
    assert_eq!(status, 200);
    assert_eq!(text, first["signature"].as_str().unwrap());

    // Client mistakes get their own statuses, never 500.
    let unknown = format!("0x{}", "a5".repeat(48));
    assert_eq!(sign(&client, &unknown, &attestation(1, 2, 1)).await.0, 404);
    assert_eq!(sign(&client, "0x1234", &attestation(1, 2, 1)).await.0, 400);
    for (what, content_type, body, expected) in [
        ("malformed", "application/json", b"{not json".to_vec(), 400),
        (
            "form",
            "application/x-www-form-urlencoded",
            b"a=b".to_vec(),
            415,
        ),
        ("huge", "application/json", vec![b' '; 2 * 1024 * 1024], 413),
    ] {
        let (status, answer) = request_raw(
            &client,
            http::Method::POST,
            &sign_path(key1),
            &[("content-type", content_type)],
            Some(body),
        )
        .await;
        assert_eq!(status, expected, "{what}: {answer}");
    }

    server.kill();
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("listening"), "{log}");

    // The known share bytes appear nowhere: data dir, SQLite file and WAL, token dir, logs.
    let files = all_files(appliance.path());
    assert!(files.iter().any(|f| f.ends_with("signer.sqlite")));
    for secret in &secrets {
        let raw = hex::decode(secret.trim_start_matches("0x")).unwrap();
        let lower = secret.trim_start_matches("0x").as_bytes().to_vec();
        let upper = secret.trim_start_matches("0x").to_uppercase().into_bytes();
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            for needle in [&raw, &lower, &upper] {
                assert!(
                    !contains(&bytes, needle),
                    "share bytes found in {}",
                    file.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_layer_refuses_missing_foreign_and_expired_client_certificates() {
    let appliance = Appliance::create();
    appliance.import_vector_key(0);
    let server = Server::start(&appliance);
    let certs = appliance.certs();

    // Valid certificate: accepted.
    let good = appliance.client_config("client");
    assert_eq!(upcheck(&server, good).await.unwrap(), 200);

    // No client certificate.
    let no_cert = client_config_without_identity(&certs.join("ca.pem"));
    assert!(
        upcheck(&server, no_cert).await.is_err(),
        "no client certificate accepted"
    );

    // A certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    certs_generate(other.path(), "intruder");
    let foreign = identity_config(&certs.join("ca.pem"), other.path(), "intruder");
    assert!(
        upcheck(&server, foreign).await.is_err(),
        "a certificate from another CA accepted"
    );

    // An expired certificate from the right CA.
    let expired_dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    keystake_signer::net::pki::issue_client_with_validity(
        &certs,
        expired_dir.path(),
        "expired",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
        keystake_signer::net::pki::Overwrite::Refuse,
    )
    .unwrap();
    let expired = identity_config(&certs.join("ca.pem"), expired_dir.path(), "expired");
    assert!(
        upcheck(&server, expired).await.is_err(),
        "an expired certificate accepted"
    );

    // The refusals are logged by the server.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("TLS handshake refused"), "{log}");
}

/// GET /upcheck presenting `config`: the status, or the client's error (handshake refused).
async fn upcheck(
    server: &Server,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<u16, keystake_signer::net::client::ClientError> {
    let response = server
        .client(config)
        .request(http::Method::GET, "/upcheck", &[], None)
        .await?;
    Ok(response.status)
}

/// A TLS 1.3 client that trusts the appliance's CA but presents no certificate.
fn client_config_without_identity(ca: &Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Core files written to `dir` (core_pattern "core" or "core.PID").
fn core_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "core" || n.starts_with("core."))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_signing_writes_no_core_dump() {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let probe_dir = tempfile::tempdir().unwrap();
    // Control: on this machine, does an ordinary process that crashes leave a core file here?
    let control = std::process::Command::new("sh")
        .args(["-c", "ulimit -c unlimited && kill -SEGV $$"])
        .current_dir(probe_dir.path())
        .status()
        .unwrap();
    assert!(!control.success());
    if core_files(probe_dir.path()).is_empty() {
        println!(
            "SKIPPED: this machine writes no core files to the working directory (core_pattern {:?})",
            pattern.trim()
        );
        return;
    }

    let appliance = Appliance::create();
    let secret = &vector_secret_keys()[0];
    appliance.import_secret(&secret_key_from_hex(secret), "k");
    let crash_dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -c unlimited && exec {BIN} serve --config {} --listen 127.0.0.1:0",
                appliance.config.display()
            ),
        ])
        .current_dir(crash_dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = StdoutLines::of(&mut child)
        .wait_for("listening on ", std::time::Duration::from_secs(30))
        .expect("server did not start");
    let client =
        keystake_signer::net::client::MtlsClient::new(appliance.client_config("client"), &url)
            .unwrap();
    let keys = public_keys(&client).await;
    let (status, _) = sign(&client, &keys[0], &attestation(700, 701, 1)).await;
    assert_eq!(status, 200);
    // Abort it the way a failed assertion would (SIGABRT dumps core by default; SIGSEGV sent
    // with kill is swallowed once by Rust's stack-overflow handler).
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-ABRT", &pid])
        .status()
        .unwrap()
        .success());
    let _ = child.wait();
    assert!(
        core_files(crash_dir.path()).is_empty(),
        "the signer left a core dump: {:?}",
        core_files(crash_dir.path())
    );
}
