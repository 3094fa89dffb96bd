//! Operator endpoints through the running server: `/healthcheck` in Web3Signer's shape going
//! DOWN (503) when the slashing database is unavailable and UP again when it is back, and
//! `/reload` picking up keys that `keys import` stored while the server runs.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

fn check<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_reports_the_database_down_and_up_again() {
    let appliance = Appliance::create();
    appliance.import_vector_key(0);
    let (server, client) = appliance.serve();

    let (status, body) = get(&client, "/healthcheck").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["status"], &body["outcome"]),
        (&"UP".into(), &"UP".into())
    );
    assert_eq!(check(&body, "default-check")["status"], "UP");
    assert_eq!(
        check(&body, "slashing-protection-db-health-check")["status"],
        "UP"
    );
    assert_eq!(check(&body, "hsm-session-health-check")["status"], "UP");
    let keys = check(&body, "keys-check");
    assert_eq!(keys["checks"][0]["data"]["keys-loaded"], 1, "{body}");
    assert_eq!(keys["checks"][0]["data"]["error-count"], 0, "{body}");

    // Another process holds the write lock: records cannot be written, so the signer is DOWN.
    let db_path = appliance.path().join("data/signer.sqlite");
    let locker = rusqlite::Connection::open(&db_path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, body) = get(&client, "/healthcheck").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["outcome"], "DOWN");
    let db = check(&body, "slashing-protection-db-health-check");
    assert_eq!(db["status"], "DOWN", "{body}");
    assert!(
        db["data"]["error"].as_str().unwrap().contains("locked"),
        "{body}"
    );
    assert_eq!(check(&body, "hsm-session-health-check")["status"], "UP");
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    assert_eq!(get(&client, "/healthcheck").await.0, 200);

    // The database file is moved away: whatever is written now would be lost at restart.
    let moved = appliance.path().join("data/moved.sqlite");
    std::fs::rename(&db_path, &moved).unwrap();
    let (status, body) = get(&client, "/healthcheck").await;
    assert_eq!(status, 503, "{body}");
    let db = check(&body, "slashing-protection-db-health-check");
    assert!(
        db["data"]["error"]
            .as_str()
            .unwrap()
            .contains("no longer the database file"),
        "{body}"
    );
    std::fs::rename(&moved, &db_path).unwrap();
    let (status, body) = get(&client, "/healthcheck").await;
    assert_eq!(status, 200, "{body}");

    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("healthcheck: DOWN"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_picks_up_keys_imported_while_serving() {
    let secrets = vector_secret_keys();
    let appliance = Appliance::create();
    appliance.import_vector_key(0);
    let (_server, client) = appliance.serve();

    assert_eq!(
        get(&client, "/reload").await,
        (200, serde_json::json!({"status": "idle"}))
    );
    assert_eq!(public_keys(&client).await.len(), 1);

    // `keys import` from another process, into the running appliance's store.
    appliance.import_vector_key(1);
    let new_key = secret_key_from_hex(&secrets[1]).public_key().to_hex();
    let case = vector_case("randao_reveal__key1");
    assert_eq!(case["pubkey"], new_key.as_str());
    assert_eq!(sign(&client, &new_key, &case["request"]).await.0, 404);

    let (status, body) = request_raw(&client, http::Method::POST, "/reload", &[], None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    let mut last = Value::Null;
    let done = wait_until(Duration::from_secs(10), || {
        last = block_on(get(&client, "/reload")).1;
        last["status"] == "completed"
    });
    assert!(done, "reload did not complete: {last}");
    assert!(
        last["lastOperationTime"].as_str().unwrap().ends_with('Z'),
        "{last}"
    );
    assert!(last.get("lastError").is_none());

    let keys = public_keys(&client).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    let (status, body) = sign(&client, &new_key, &case["request"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["signature"], case["signature"]);
    let (_, health) = get(&client, "/healthcheck").await;
    assert_eq!(
        check(&health, "keys-check")["checks"][0]["data"]["keys-loaded"],
        2
    );
}
