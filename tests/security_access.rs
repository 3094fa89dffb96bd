//! Issue 17 (access control, bounded inputs, far-future duties): each test performs the attack
//! against the real binary over real mutual TLS on 127.0.0.1, and fails on the code before the
//! fix.
//!
//! The appliance of most tests: vector keys A and B, the `init` policy's first client replaced
//! by a policy naming `client` (everything), `km` (keymanager on A only), `vc` (signing only)
//! and `c` (named, granted nothing); `u` holds a certificate of the same CA and is named
//! nowhere.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::common::*;

struct Setup {
    appliance: Appliance,
    key_a: String,
    key_b: String,
}

const POLICY: &str = r#"
[[client]]
cn = "client"
[[client.grant]]
keys = "all"
operations = ["all", "voluntary_exit", "deposit"]

[[client]]
cn = "km"
[[client.grant]]
keys = ["KEY_A"]
operations = ["keymanager"]

[[client]]
cn = "vc"
[[client.grant]]
keys = "all"
operations = ["attestation", "block"]

[[client]]
cn = "c"
"#;

fn setup() -> Setup {
    let appliance = Appliance::create();
    let key_a = appliance.import_vector_key(0);
    let key_b = appliance.import_vector_key(1);
    let certs = appliance.certs();
    let certs = certs.to_str().unwrap();
    run_ok(&[
        "certs", "generate", "--out", certs, "--ca-dir", certs, "--client", "km", "--client", "vc",
        "--client", "c", "--client", "u",
    ]);
    std::fs::write(
        appliance.path().join("policy.toml"),
        POLICY.replace("KEY_A", &key_a),
    )
    .unwrap();
    Setup {
        appliance,
        key_a,
        key_b,
    }
}

/// The current mainnet epoch by the wall clock.
fn mainnet_epoch_now() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (now - 1_606_824_023) / 384
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Item 1: a fresh demo names only its own client; any other certificate of the same CA is
/// refused. A configuration without a policy does not serve unless `allow_any_client = true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_certificate_of_the_demo_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&["demo", "--dir", dir.path().to_str().unwrap(), "--no-serve"]);
    let key = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("0x").map(|k| format!("0x{k}")))
        .expect("the demo prints its keys");
    let certs = dir.path().join("certs");
    run_ok(&[
        "certs",
        "generate",
        "--out",
        certs.to_str().unwrap(),
        "--ca-dir",
        certs.to_str().unwrap(),
        "--client",
        "vc-2",
    ]);
    let config = dir.path().join("signer.toml");
    let demo = Appliance { dir, config };
    let server = Server::start(&demo);
    let attestation: Value = serde_json::from_str(
        &std::fs::read_to_string(demo.path().join("attestation.json")).unwrap(),
    )
    .unwrap();
    let second = server.client(demo.client_config("vc-2"));
    let (status, body) = sign(&second, &key, &attestation).await;
    assert_eq!(status, 403, "a second certificate of the demo CA: {body}");
    let (status, _) = get(&second, "/api/v1/eth2/publicKeys").await;
    assert_eq!(status, 403);
    let first = server.client(demo.client_config("client"));
    let (status, body) = sign(&first, &key, &attestation).await;
    assert_eq!(status, 200, "the demo client: {body}");
    drop(server);

    // No policy: refused at start, unless explicitly allowed.
    let text = std::fs::read_to_string(&demo.config).unwrap();
    let open = text.replace("policy_file = \"policy.toml\"\n", "");
    assert_ne!(open, text);
    std::fs::write(&demo.config, &open).unwrap();
    let (ok, _, stderr) = run_with_config(&demo.config, &["serve"], &["--listen", "127.0.0.1:0"]);
    assert!(!ok, "served without a policy");
    assert!(stderr.contains("allow_any_client"), "{stderr}");
    std::fs::write(&demo.config, format!("allow_any_client = true\n{open}")).unwrap();
    let server = Server::start(&demo);
    let (status, _) = sign(
        &server.client(demo.client_config("vc-2")),
        &key,
        &attestation,
    )
    .await;
    assert_eq!(
        status, 200,
        "allow_any_client serves every certificate of the CA"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("allow_any_client = true"),
        "no loud warning:\n{log}"
    );
}

/// Item 2: a keymanager grant on key A does not reach key B — not its deletion, not its
/// history, not its listing, not an import of another key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keymanager_grant_on_one_key_cannot_touch_another() {
    let setup = setup();
    let token = setup.appliance.keymanager_token();
    let server = Server::start(&setup.appliance);
    let km = server.client(setup.appliance.client_config("km"));
    let admin = server.client(setup.appliance.client_config("client"));
    let (status, _) = sign(&admin, &setup.key_b, &attestation(1, 2, 1)).await;
    assert_eq!(status, 200);

    for keys in [json!([setup.key_b]), json!([setup.key_a, setup.key_b])] {
        let (status, body) = keymanager(
            &km,
            http::Method::DELETE,
            Some(&token),
            Some(&json!({ "pubkeys": keys })),
        )
        .await;
        assert_eq!(status, 403, "delete {keys}: {body}");
        assert!(body.get("slashing_protection").is_none(), "{body}");
    }
    // Nothing was deleted: both keys still sign.
    let (status, body) = sign(&admin, &setup.key_b, &attestation(2, 3, 1)).await;
    assert_eq!(status, 200, "B after the refused delete: {body}");
    let (status, _) = sign(&admin, &setup.key_a, &attestation(2, 3, 1)).await;
    assert_eq!(status, 200);
    // The listing shows A only.
    let (status, body) = keymanager(&km, http::Method::GET, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["validating_pubkey"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [setup.key_a.as_str()]);
    // Importing a key outside the grant: refused whole, nothing stored.
    let other = secret_key_from_hex(&vector_secret_keys()[2]);
    let keystore = keystore_json(
        &other,
        "pw",
        keystake_core::keystore::KdfChoice::Pbkdf2 { c: 16 },
    );
    let (status, body) = keymanager(
        &km,
        http::Method::POST,
        Some(&token),
        Some(&json!({ "keystores": [keystore], "passwords": ["pw"] })),
    )
    .await;
    assert_eq!(status, 403, "import of an ungranted key: {body}");
    assert!(!public_keys(&admin)
        .await
        .contains(&other.public_key().to_hex()));
    // The granted key may be deleted.
    let (status, body) = keymanager(
        &km,
        http::Method::DELETE,
        Some(&token),
        Some(&json!({ "pubkeys": [setup.key_a] })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["status"], "deleted", "{body}");
}

/// Items 3 and 4: operator endpoints need an `operator` grant; a reload racing a DELETE never
/// brings the deleted key back; a sign request without a JSON content type is refused (415).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_endpoints_need_a_grant_and_reload_cannot_resurrect_a_deleted_key() {
    let setup = setup();
    let token = setup.appliance.keymanager_token();
    let server = Server::start(&setup.appliance);
    let vc = server.client(setup.appliance.client_config("vc"));
    let admin = server.client(setup.appliance.client_config("client"));
    for (method, path) in [
        (http::Method::POST, "/reload"),
        (http::Method::GET, "/reload"),
        (http::Method::POST, "/keystake/v1/admin/reload"),
    ] {
        let (status, body) = request_raw(&vc, method.clone(), path, &[], None).await;
        assert_eq!(status, 403, "signing-only client, {method} {path}: {body}");
    }
    let (status, _) = request_raw(&admin, http::Method::POST, "/reload", &[], None).await;
    assert_eq!(status, 202);

    // Item 4: no Content-Type, or text/plain (what a web page can send without a preflight).
    let body = serde_json::to_vec(&attestation(1, 2, 1)).unwrap();
    for headers in [vec![], vec![("content-type", "text/plain")]] {
        let (status, answer) = request_raw(
            &vc,
            http::Method::POST,
            &sign_path(&setup.key_a),
            &headers,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 415, "{headers:?}: {answer}");
    }

    // The race: reloads in a tight loop while key B is deleted.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reloader = {
        let stop = stop.clone();
        let client = server.client(setup.appliance.client_config("client"));
        tokio::spawn(async move {
            let mut accepted = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) =
                    request_raw(&client, http::Method::POST, "/reload", &[], None).await;
                accepted += usize::from(status == 202);
            }
            accepted
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Key B is deleted, imported again (re-enabled) and deleted again, five times, while the
    // reloads run; after each delete it must never sign (before, a reload that read the store
    // just before the delete could install its stale index after it).
    let secret_b = secret_key_from_hex(&vector_secret_keys()[1]);
    let keystore_b = keystore_json(
        &secret_b,
        "pw",
        keystake_core::keystore::KdfChoice::Pbkdf2 { c: 16 },
    );
    let mut epoch = 10;
    for round in 0..5 {
        if round > 0 {
            let (status, body) = keymanager(
                &admin,
                http::Method::POST,
                Some(&token),
                Some(&json!({ "keystores": [keystore_b], "passwords": ["pw"] })),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"][0]["status"], "imported", "{body}");
        }
        let (status, body) = keymanager(
            &admin,
            http::Method::DELETE,
            Some(&token),
            Some(&json!({ "pubkeys": [setup.key_b] })),
        )
        .await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_eq!(
            body["data"][0]["status"], "deleted",
            "round {round}: {body}"
        );
        let deadline = Instant::now() + Duration::from_millis(400);
        while Instant::now() < deadline {
            let (status, answer) =
                sign(&admin, &setup.key_b, &attestation(epoch, epoch + 1, 1)).await;
            assert_eq!(
                status, 404,
                "round {round}: the deleted key signed again: {answer}"
            );
            epoch += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        reloader.await.unwrap() > 0,
        "no reload ran during the delete"
    );
}

/// Item 5: a stale CRL is refused at start; a reload whose TLS part fails leaves the previous
/// policy in force too (before, the new policy was installed first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_reload_keeps_the_previous_policy_and_a_stale_crl_is_refused() {
    use keystake_signer::files::Overwrite;
    let setup = setup();
    let certs = setup.appliance.certs();
    let crl = certs.join("crl.pem");
    keystake_signer::net::pki::write_crl(&certs, &[], &crl, 7, Overwrite::Replace).unwrap();
    let config = std::fs::read_to_string(&setup.appliance.config)
        .unwrap()
        .replace("# crl = ", "crl = ");
    std::fs::write(&setup.appliance.config, config).unwrap();
    let server = Server::start(&setup.appliance);
    let vc = server.client(setup.appliance.client_config("vc"));
    let admin = server.client(setup.appliance.client_config("client"));
    assert_eq!(sign(&vc, &setup.key_a, &attestation(1, 2, 1)).await.0, 200);

    // A new policy without `vc`, and a CRL that is already past its nextUpdate.
    std::fs::write(
        setup.appliance.path().join("policy.toml"),
        POLICY
            .replace("KEY_A", &setup.key_a)
            .replace("cn = \"vc\"", "cn = \"vc-gone\""),
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    keystake_signer::net::pki::write_crl_between(
        &certs,
        &[],
        &crl,
        now - time::Duration::days(2),
        now - time::Duration::days(1),
        Overwrite::Replace,
    )
    .unwrap();
    let (status, body) = request_raw(
        &admin,
        http::Method::POST,
        "/keystake/v1/admin/reload",
        &[],
        None,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.to_string().contains("stale"), "{body}");
    let (status, body) = sign(&vc, &setup.key_a, &attestation(2, 3, 1)).await;
    assert_eq!(
        status, 200,
        "the previous policy must stay in force: {body}"
    );
    drop(server);
    let (ok, _, stderr) = setup
        .appliance
        .cli(&["serve"], &["--listen", "127.0.0.1:0"]);
    assert!(
        !ok && stderr.contains("stale"),
        "started with a stale CRL: {stderr}"
    );
}

/// Item 6: a 600 KB `type` is refused with a short error, and its audit row stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacker_strings_are_cut_in_errors_and_audit_rows() {
    let setup = setup();
    let server = Server::start(&setup.appliance);
    let vc = server.client(setup.appliance.client_config("vc"));
    let mut request = attestation(1, 2, 1);
    request["type"] = json!("X".repeat(600_000));
    let bytes = serde_json::to_vec(&request).unwrap();
    let response = vc
        .request(
            http::Method::POST,
            &sign_path(&setup.key_a),
            JSON_HEADERS,
            Some(bytes),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 400);
    assert!(
        response.body.len() <= 4096,
        "error body of {} bytes",
        response.body.len()
    );
    // The identifier too.
    let long_id = format!("0x{}", "ab".repeat(5000));
    let (status, body) = sign(&vc, &long_id, &attestation(1, 2, 1)).await;
    assert_eq!(status, 400);
    assert!(body.to_string().len() <= 4096);
    drop(server);
    let db = rusqlite::Connection::open(setup.appliance.path().join("data/signer.sqlite")).unwrap();
    let (rows, largest): (i64, i64) = db
        .query_row(
            "SELECT count(*), max(length(api) + length(client) + length(fingerprint) + length(key)
                 + length(kind) + length(signing_root) + length(outcome) + length(reason))
             FROM audit_log",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(rows >= 2, "{rows} audit rows");
    assert!(largest <= 4096, "an audit row of {largest} bytes");
}

/// Item 9: an attestation 1,000 epochs ahead of the wall clock is refused before it is
/// recorded; the key keeps signing current duties (a recorded far-future target would have
/// surrounded them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_duties_are_refused_before_recording() {
    let setup = setup();
    let server = Server::start(&setup.appliance);
    let vc = server.client(setup.appliance.client_config("vc"));
    let now = mainnet_epoch_now();
    let (status, body) = sign(&vc, &setup.key_a, &attestation(now - 2, now + 1000, 1)).await;
    assert_eq!(status, 400, "far-future target: {body}");
    assert!(body["error"].as_str().unwrap().contains("ahead"), "{body}");
    let (status, body) = sign(&vc, &setup.key_a, &attestation(now - 1, now, 1)).await;
    assert_eq!(status, 200, "a current duty after the refused one: {body}");
    let (status, body) = sign(&vc, &setup.key_a, &attestation(now, now + 1, 1)).await;
    assert_eq!(status, 200, "next epoch (within the margin): {body}");
    drop(server);
    let exported = setup.appliance.export_slashing(&[]);
    let text = exported.to_json();
    assert!(!text.contains(&(now + 1000).to_string()), "{text}");
}

/// Item 7: clients the policy does not name, or names with no grant, open many HTTP/2 streams
/// announcing large bodies and trickling them: every stream is refused at its headers, and the
/// server's memory stays flat. A flood of handshakes from one address is cut at the per-address
/// limit while another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_and_ungranted_clients_are_refused_before_their_bodies() {
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    let setup = setup();
    let server = Server::start(&setup.appliance);
    let pid = server.child.id();
    let address = server.url.trim_start_matches("https://").to_owned();
    let before = rss_kib(pid);
    for name in ["u", "c"] {
        let mut senders = Vec::new();
        for _ in 0..4 {
            let mut config = (*setup.appliance.client_config(name)).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let (sender, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            senders.push(sender);
        }
        let mut streams = Vec::new();
        for sender in &senders {
            for _ in 0..60 {
                let mut sender = sender.clone();
                // 64 KiB now, the rest of the announced 1 MiB never.
                let body = StreamBody::new(
                    futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
                        bytes::Bytes::from(vec![b' '; 64 * 1024]),
                    ))])
                    .chain(futures_util::stream::pending()),
                );
                let request =
                    http::Request::post(format!("{}{}", server.url, sign_path(&setup.key_a)))
                        .header("content-type", "application/json")
                        .header("content-length", (1usize << 20).to_string())
                        .body(body)
                        .unwrap();
                streams.push(tokio::spawn(async move {
                    sender.ready().await.ok()?;
                    let response = sender.send_request(request).await.ok()?;
                    Some(response.status().as_u16())
                }));
            }
        }
        let started = Instant::now();
        for stream in streams {
            let status = tokio::time::timeout(Duration::from_secs(10), stream)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{name}: a stream was not answered within 10 s (its body was waited for)"
                    )
                })
                .unwrap();
            assert_eq!(status, Some(403), "{name}");
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 48 * 1024,
        "server RSS grew from {before} KiB to {after} KiB"
    );

    // Handshake flood from 127.0.0.2: sockets that never send a ClientHello.
    let target: std::net::SocketAddr = address.parse().unwrap();
    let mut flood = Vec::new();
    let limit = keystake_signer::net::listen::MAX_HANDSHAKES_PER_IP;
    let sockets = limit + 64;
    for _ in 0..sockets {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        flood.push(socket.connect(target).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut flood {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= sockets - limit,
        "only {closed} of {sockets} idle handshakes from one address were closed"
    );
    let admin = server.client(setup.appliance.client_config("client"));
    let (status, body) = sign(&admin, &setup.key_a, &attestation(1, 2, 1)).await;
    assert_eq!(
        status, 200,
        "another address is served during the flood: {body}"
    );
}
