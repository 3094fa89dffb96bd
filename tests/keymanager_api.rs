//! The keymanager API (`/eth/v1/keystores`) through the running server over mutual TLS: bearer
//! token, import statuses, keys sealed and signing, delete that stops signing and returns the
//! slashing data, and the flow import → sign → delete → re-import → the slashable request is
//! still refused.

use http::Method;
use keystake_core::keystore::KdfChoice;
use keystake_core::slashing::interchange::Interchange;
use serde_json::{json, Value};

use crate::common::*;

const PASSWORD: &str = "correct horse ✓ battery";
fn statuses(body: &Value) -> Vec<&str> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {body}"))
        .iter()
        .map(|entry| entry["status"].as_str().unwrap())
        .collect()
}

/// A 400 answer whose message names `what`.
fn assert_bad_request(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(what),
        "{what} not named: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keymanager_requires_the_bearer_token() {
    use std::os::unix::fs::PermissionsExt;
    let appliance = Appliance::create();
    let token = appliance.keymanager_token();
    assert!(token.len() >= 64 && token.bytes().all(|b| b.is_ascii_hexdigit()));
    let token_file = appliance.path().join("data/keymanager.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode");

    let (_server, client) = appliance.serve();
    let import = json!({
        "keystores": [keystore_json(&secret_key_from_hex(&vector_secret_keys()[0]), PASSWORD, KdfChoice::Pbkdf2 { c: 16 })],
        "passwords": [PASSWORD],
    });
    let delete = json!({"pubkeys": [format!("0x{}", "a5".repeat(48))]});
    let mut wrong = token.clone().into_bytes();
    wrong[10] = if wrong[10] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    for (method, body) in [
        (Method::GET, None),
        (Method::POST, Some(&import)),
        (Method::DELETE, Some(&delete)),
    ] {
        let (status, answer) = keymanager(&client, method.clone(), None, body).await;
        assert_eq!(status, 401, "{method} without a token: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("bearer"),
            "{answer}"
        );
        let (status, answer) = keymanager(&client, method.clone(), Some(&wrong), body).await;
        assert_eq!(status, 403, "{method} with a wrong token: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
    // Another scheme is no bearer token.
    let (status, _) = request_raw(
        &client,
        Method::GET,
        "/eth/v1/keystores",
        &[("authorization", &format!("Basic {token}"))],
        None,
    )
    .await;
    assert_eq!(status, 401);
    // Nothing was imported by the refused requests.
    let (status, body) = keymanager(&client, Method::GET, Some(&token), None).await;
    assert_eq!((status, body), (200, json!({"data": []})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reports_per_key_status_seals_keys_and_they_sign() {
    let secrets: Vec<_> = vector_secret_keys()
        .iter()
        .map(|s| secret_key_from_hex(s))
        .collect();
    let appliance = Appliance::create();
    let token = appliance.keymanager_token();
    let (server, client) = appliance.serve();

    let fast = KdfChoice::Pbkdf2 { c: 16 };
    let scrypt = KdfChoice::Scrypt {
        n: 1 << 12,
        r: 8,
        p: 1,
    };
    let request = json!({
        "keystores": [
            keystore_json(&secrets[0], PASSWORD, fast),
            keystore_json(&secrets[1], "another password", fast),
            keystore_json(&secrets[0], PASSWORD, fast),
            keystore_json(&secrets[2], PASSWORD, scrypt),
            "{\"not\": \"a keystore\"}",
        ],
        "passwords": [PASSWORD, PASSWORD, PASSWORD, PASSWORD, PASSWORD],
    });
    let (status, body) = keymanager(&client, Method::POST, Some(&token), Some(&request)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        statuses(&body),
        ["imported", "error", "duplicate", "imported", "error"],
        "{body}"
    );
    assert!(
        body["data"][1]["message"]
            .as_str()
            .unwrap()
            .contains("wrong password"),
        "{body}"
    );
    assert!(body["data"][0].get("message").is_none(), "{body}");

    // Listed by the keymanager and the signing API, and signing at once (no reload needed).
    let (status, list) = keymanager(&client, Method::GET, Some(&token), None).await;
    assert_eq!(status, 200);
    let listed = field_of_each(&list["data"], "validating_pubkey");
    assert_eq!(
        listed,
        [
            secrets[0].public_key().to_hex(),
            secrets[2].public_key().to_hex()
        ]
    );
    assert_eq!(list["data"][0]["readonly"], false);
    for name in ["randao_reveal__key0", "randao_reveal__key2"] {
        let case = vector_case(name);
        let (status, answer) =
            sign(&client, case["pubkey"].as_str().unwrap(), &case["request"]).await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["signature"], case["signature"], "{name}");
    }

    // A second import of a known key is a duplicate; malformed requests are 400 with a message.
    let again =
        json!({"keystores": [keystore_json(&secrets[0], PASSWORD, fast)], "passwords": [PASSWORD]});
    let (status, body) = keymanager(&client, Method::POST, Some(&token), Some(&again)).await;
    assert_eq!((status, statuses(&body)), (200, vec!["duplicate"]));
    let uneven =
        json!({"keystores": [keystore_json(&secrets[1], PASSWORD, fast)], "passwords": []});
    let (status, body) = keymanager(&client, Method::POST, Some(&token), Some(&uneven)).await;
    assert_bad_request(status, &body, "passwords");
    let (status, body) = keymanager(
        &client,
        Method::POST,
        Some(&token),
        Some(&json!({"keystores": []})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = keymanager(
        &client,
        Method::DELETE,
        Some(&token),
        Some(&json!({"pubkeys": ["0x1234"]})),
    )
    .await;
    assert_bad_request(status, &body, "pubkeys[0]");

    // Sealed by the HSM: the stored keys are not in the database in plaintext.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(appliance.path().join("data")).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    for secret in [&secrets[0], &secrets[2]] {
        let raw = secret.to_bytes();
        assert!(!stored.windows(32).any(|w| w == raw.as_slice()));
    }
    let listed = appliance.cli_ok(&["keys", "list"], &[]);
    assert_eq!(listed.matches("active keystore").count(), 2, "{listed}");

    // Progress of the parallel decryption is in the log.
    let log = std::fs::read_to_string(&server.log).unwrap();
    for done in 1..=5 {
        assert!(
            log.lines()
                .any(|l| l.contains("keystore import:") && l.contains(&format!("{done}/5"))),
            "no progress line {done}/5: {log}"
        );
    }
    assert!(
        log.contains("keystore import: done (2 of 5 imported)"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "the password was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_sign_delete_reimport_keeps_the_slashing_protection() {
    let secret = secret_key_from_hex(&vector_secret_keys()[0]);
    let other = secret_key_from_hex(&vector_secret_keys()[1]);
    let pubkey = secret.public_key().to_hex();
    let fast = KdfChoice::Pbkdf2 { c: 16 };
    let keystore = keystore_json(&secret, PASSWORD, fast);

    let appliance = Appliance::create();
    let token = appliance.keymanager_token();
    let (_server, client) = appliance.serve();

    // Import → sign an attestation and a block.
    let import = json!({"keystores": [keystore.clone()], "passwords": [PASSWORD]});
    let (status, body) = keymanager(&client, Method::POST, Some(&token), Some(&import)).await;
    assert_eq!((status, statuses(&body)), (200, vec!["imported"]), "{body}");
    let (status, body) = sign(&client, &pubkey, &attestation(100, 101, 1)).await;
    assert_eq!(status, 200, "{body}");
    let block = vector_case("block_v2_deneb__key0");
    let (status, body) = sign(&client, &pubkey, &block["request"]).await;
    assert_eq!(status, 200, "{body}");
    let block_slot: u64 = block["request"]["beacon_block"]["block_header"]["slot"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Delete: the key stops signing, its slashing data comes back.
    let unknown = format!("0x{}", "a5".repeat(48));
    let delete = json!({"pubkeys": [pubkey, unknown]});
    let (status, body) = keymanager(&client, Method::DELETE, Some(&token), Some(&delete)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(statuses(&body), ["deleted", "not_found"], "{body}");
    let exported = body["slashing_protection"].as_str().unwrap().to_owned();
    let interchange = Interchange::from_json(&exported).unwrap();
    assert_eq!(
        interchange.metadata.genesis_validators_root.to_hex(),
        MAINNET_GVR
    );
    assert_eq!(
        interchange.data.len(),
        1,
        "only the deleted key: {exported}"
    );
    let record = &interchange.data[0];
    assert_eq!(record.pubkey.to_hex(), pubkey);
    assert!(
        record
            .signed_attestations
            .iter()
            .any(|a| a.target_epoch.0 == 101),
        "{exported}"
    );
    assert!(
        record.signed_blocks.iter().any(|b| b.slot.0 == block_slot),
        "{exported}"
    );
    let (status, body) = sign(&client, &pubkey, &attestation(101, 102, 1)).await;
    assert_eq!(status, 404, "a deleted key must not sign: {body}");
    assert_eq!(public_keys(&client).await, Vec::<String>::new());

    // The slashing data is never deleted: a second delete still returns it.
    let (status, body) = keymanager(
        &client,
        Method::DELETE,
        Some(&token),
        Some(&json!({"pubkeys": [pubkey]})),
    )
    .await;
    assert_eq!(
        (status, statuses(&body)),
        (200, vec!["not_active"]),
        "{body}"
    );
    assert_eq!(
        Interchange::from_json(body["slashing_protection"].as_str().unwrap()).unwrap(),
        interchange
    );

    // Re-import on another appliance with the exported data (and a record of a key that is not
    // being imported, which must be left out): the slashable requests are still refused.
    let mut with_other = interchange.clone();
    with_other
        .data
        .push(keystake_core::slashing::interchange::InterchangeRecord {
            pubkey: other.public_key(),
            signed_blocks: vec![],
            signed_attestations: vec![],
        });
    let fresh = Appliance::create();
    let fresh_token = fresh.keymanager_token();
    let (_fresh_server, fresh_client) = fresh.serve();
    let reimport = json!({
        "keystores": [keystore.clone()],
        "passwords": [PASSWORD],
        "slashing_protection": with_other.to_json(),
    });
    let (status, body) = keymanager(
        &fresh_client,
        Method::POST,
        Some(&fresh_token),
        Some(&reimport),
    )
    .await;
    assert_eq!((status, statuses(&body)), (200, vec!["imported"]), "{body}");
    for (what, request) in [
        ("double vote", attestation(100, 101, 2)),
        ("surround", attestation(99, 102, 3)),
        ("old target", attestation(100, 100, 4)),
    ] {
        let (status, body) = sign(&fresh_client, &pubkey, &request).await;
        assert_eq!(status, 412, "{what} after re-import: {body}");
    }
    let mut other_block = block["request"].clone();
    other_block["beacon_block"]["block_header"]["body_root"] =
        json!(format!("0x{}", "99".repeat(32)));
    other_block.as_object_mut().unwrap().remove("signingRoot");
    let (status, body) = sign(&fresh_client, &pubkey, &other_block).await;
    assert_eq!(
        status, 412,
        "second block at the slot after re-import: {body}"
    );
    let (status, body) = sign(&fresh_client, &pubkey, &attestation(101, 102, 5)).await;
    assert_eq!(status, 200, "a later attestation is fine: {body}");
    // The other key's record was not imported: that key is unknown there.
    let (status, body) = keymanager(
        &fresh_client,
        Method::DELETE,
        Some(&fresh_token),
        Some(&json!({"pubkeys": [other.public_key().to_hex()]})),
    )
    .await;
    assert_eq!(
        (status, statuses(&body)),
        (200, vec!["not_found"]),
        "{body}"
    );

    // Re-import on the first appliance too: the history it kept refuses the same requests.
    let (status, body) = keymanager(&client, Method::POST, Some(&token), Some(&reimport)).await;
    assert_eq!((status, statuses(&body)), (200, vec!["imported"]), "{body}");
    let (status, body) = sign(&client, &pubkey, &attestation(100, 101, 2)).await;
    assert_eq!(status, 412, "{body}");
    let (status, _) = sign(&client, &pubkey, &attestation(100, 101, 1)).await;
    assert_eq!(status, 200, "the identical attestation is answered again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slashing_protection_that_cannot_be_imported_refuses_the_whole_request() {
    let secret = secret_key_from_hex(&vector_secret_keys()[0]);
    let keystore = keystore_json(&secret, PASSWORD, KdfChoice::Pbkdf2 { c: 16 });
    let appliance = Appliance::create();
    let token = appliance.keymanager_token();
    let (_server, client) = appliance.serve();

    let mut wrong_version = Interchange::new(MAINNET_GVR.parse().unwrap());
    wrong_version.metadata.interchange_format_version = "4".into();
    let bad_documents = [
        "not json".to_owned(),
        serde_json::to_string(&wrong_version).unwrap(),
    ];
    for document in bad_documents {
        let request = json!({"keystores": [keystore], "passwords": [PASSWORD], "slashing_protection": document});
        let (status, body) = keymanager(&client, Method::POST, Some(&token), Some(&request)).await;
        assert_bad_request(status, &body, "slashing_protection");
    }
    // Bind the database to mainnet by signing, then offer another network's history.
    appliance.import_vector_key(1);
    let (status, _) = request_raw(&client, Method::POST, "/reload", &[], None).await;
    assert_eq!(status, 202);
    let key1 = secret_key_from_hex(&vector_secret_keys()[1])
        .public_key()
        .to_hex();
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        block_on(sign(&client, &key1, &attestation(1, 2, 1))).0 == 200
    }));
    let other_network = Interchange::new(format!("0x{}", "ee".repeat(32)).parse().unwrap());
    let request = json!({"keystores": [keystore], "passwords": [PASSWORD], "slashing_protection": other_network.to_json()});
    let (status, body) = keymanager(&client, Method::POST, Some(&token), Some(&request)).await;
    assert_bad_request(status, &body, "genesis_validators_root");
    // Nothing was imported by any of the refused requests.
    let (_, list) = keymanager(&client, Method::GET, Some(&token), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["data"][0]["validating_pubkey"], key1.as_str());
}
