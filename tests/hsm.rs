//! The HSM through the real binary and real SoftHSM2 tokens: the TLS identity inside the token
//! (`demo` leaves no server key file; handshakes are signed by the token), `hsm check`, and HSM
//! faults while serving (token directory removed → signing 503 with a reason, `/healthcheck`
//! DOWN, then recovery when it is back; `serve` refusing a missing token or key).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// Every file under `dir` whose content holds a PEM private key.
fn private_key_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .map(|bytes| {
                    bytes
                        .windows(b"PRIVATE KEY-----".len())
                        .any(|w| w == b"PRIVATE KEY-----")
                })
                .unwrap_or(false)
            {
                found.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

fn check<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {body}"))
}

/// `demo` generates the TLS key in SoftHSM2 and issues the server certificate to it: the only
/// private key files are the demo CA's and the client's, and `serve` completes real mutual-TLS
/// handshakes signed by the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_keeps_the_tls_key_in_the_hsm() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(&["demo", "--dir", dir.path().to_str().unwrap(), "--no-serve"]);
    assert_eq!(
        private_key_files(dir.path()),
        vec![
            PathBuf::from("certs/ca.key"),
            PathBuf::from("certs/client.key")
        ]
    );
    assert!(!dir.path().join("certs/server.key").exists());
    let config = std::fs::read_to_string(dir.path().join("signer.toml")).unwrap();
    assert!(
        !config.lines().any(|l| l.starts_with("server_key")),
        "{config}"
    );

    let appliance = Appliance {
        config: dir.path().join("signer.toml"),
        dir,
    };
    let (server, client) = appliance.serve();
    assert_eq!(public_keys(&client).await.len(), 3);
    // More connections, each a full handshake signed by the token.
    for _ in 0..3 {
        let fresh = server.client(appliance.client_config("client"));
        assert_eq!(get(&fresh, "/upcheck").await.0, 200);
    }
}

/// The token directory disappears under a running signer (a network HSM unplugged, a volume
/// lost): signing answers 503 naming the HSM, never a signature and never 500; `/healthcheck`
/// is DOWN with the HSM check DOWN; when the directory is back, signing and health recover
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_removed_while_serving_is_503_then_recovers() {
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(0);
    let (_server, client) = appliance.serve();
    let request = attestation(10, 11, 1);
    let (status, body) = sign(&client, &key, &request).await;
    assert_eq!(status, 200, "{body}");

    let tokens = appliance.path().join("hsm/tokens");
    let away = appliance.path().join("hsm/tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    let (status, body) = sign(&client, &key, &attestation(11, 12, 2)).await;
    assert_eq!(status, 503, "{body}");
    let text = body.to_string();
    assert!(text.to_lowercase().contains("hsm"), "{text}");
    let (status, health) = get(&client, "/healthcheck").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(check(&health, "hsm-session-health-check")["status"], "DOWN");

    std::fs::rename(&away, &tokens).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            block_on_local(get(&client, "/healthcheck")).0 == 200
        }),
        "health did not recover: {}",
        block_on_local(get(&client, "/healthcheck")).1
    );
    let (status, body) = sign(&client, &key, &attestation(11, 12, 2)).await;
    assert_eq!(status, 200, "{body}");
}

/// Run a future to completion from inside a `wait_until` closure on the test's runtime.
fn block_on_local<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// `serve` refuses to start when the token is gone or the TLS key is missing from it, naming
/// what is missing.
#[test]
fn serve_refuses_a_missing_token_or_key() {
    let appliance = Appliance::create();
    let tokens = appliance.path().join("hsm/tokens");
    let away = appliance.path().join("hsm/tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let (ok, _, stderr) = run(&[
        "serve",
        "--config",
        appliance.config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("no initialized token labelled"), "{stderr}");
}

/// `hsm check` through the binary on a real SoftHSM2 token: everything supported, exit 0, in
/// text and JSON.
#[test]
fn hsm_check_on_softhsm2_reports_everything_supported() {
    let appliance = Appliance::create();
    let text = appliance.cli_ok(&["hsm", "check"], &[]);
    assert!(text.contains("CKM_AES_GCM"), "{text}");
    assert!(
        text.contains("all required mechanisms are supported"),
        "{text}"
    );
    assert!(!text.contains("MISSING"), "{text}");
    let json: Value =
        serde_json::from_str(&appliance.cli_ok(&["hsm", "check"], &["--json"])).unwrap();
    assert_eq!(json["ok"], true);
    let mechanisms = json["mechanisms"].as_array().unwrap();
    assert_eq!(mechanisms.len(), 5);
    assert!(
        mechanisms.iter().all(|m| m["status"] == "supported"),
        "{json}"
    );
}

/// A wrong user PIN: `serve` refuses to start, saying the HSM refused the PIN (nothing else is
/// opened); with the right PIN back it starts.
#[test]
fn serve_refuses_a_wrong_pin() {
    let appliance = Appliance::create();
    let pin = appliance.path().join("hsm/user.pin");
    let right = std::fs::read_to_string(&pin).unwrap();
    std::fs::write(&pin, "not-the-pin\n").unwrap();
    let (ok, _, stderr) = run(&[
        "serve",
        "--config",
        appliance.config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("refused the PIN"), "{stderr}");
    std::fs::write(&pin, right).unwrap();
    let _server = Server::start(&appliance);
}

/// The unseal policy through the real binary (`[hsm] unseal_cache`, docs/hsm.md): a cached share
/// signs the vector request like the HSM does; when the token disappears, the `/healthcheck`
/// probe finds the HSM down and empties the cache, so signing answers 503 (never a signature from
/// memory, never 500) well before the TTL; it recovers when the token is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseal_cache_signs_and_stops_with_the_hsm() {
    let appliance = Appliance::create();
    let config = std::fs::read_to_string(&appliance.config).unwrap();
    assert!(config.contains("\n[hsm]\n"), "{config}");
    std::fs::write(
        &appliance.config,
        config.replace(
            "\n[hsm]\n",
            "\n[hsm]\nunseal_cache = { ttl_secs = 3600, max_entries = 8 }\n",
        ),
    )
    .unwrap();
    let key = appliance.import_vector_key(0);
    let (_server, client) = appliance.serve();
    let first = sign(&client, &key, &attestation(10, 11, 1)).await;
    assert_eq!(first.0, 200, "{}", first.1);
    // The same data again: answered again, from the cached share this time.
    let again = sign(&client, &key, &attestation(10, 11, 1)).await;
    assert_eq!(again, first);

    let tokens = appliance.path().join("hsm/tokens");
    let away = appliance.path().join("hsm/tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    let (status, health) = get(&client, "/healthcheck").await;
    assert_eq!(status, 503, "{health}");
    let (status, body) = sign(&client, &key, &attestation(11, 12, 2)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().to_lowercase().contains("hsm"), "{body}");

    std::fs::rename(&away, &tokens).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            block_on_local(get(&client, "/healthcheck")).0 == 200
        }),
        "health did not recover"
    );
    let (status, body) = sign(&client, &key, &attestation(11, 12, 2)).await;
    assert_eq!(status, 200, "{body}");
}

/// A policy out of bounds is refused when the signer starts, naming the setting.
#[test]
fn serve_refuses_an_unseal_cache_out_of_bounds() {
    let appliance = Appliance::create();
    let config = std::fs::read_to_string(&appliance.config).unwrap();
    std::fs::write(
        &appliance.config,
        config.replace(
            "\n[hsm]\n",
            "\n[hsm]\nunseal_cache = { ttl_secs = 0, max_entries = 8 }\n",
        ),
    )
    .unwrap();
    let (ok, _, stderr) = run(&[
        "serve",
        "--config",
        appliance.config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(stderr.contains("hsm.unseal_cache.ttl_secs"), "{stderr}");
}
