//! Web3Signer conformance through the RUNNING server (real binary, SoftHSM2, SQLite, mutual TLS):
//! every case of `../shared/vectors/web3signer/` answered byte-identically, every case of
//! `../shared/vectors/web3signer-negative/` refused with its recommended status, and the request
//! spellings Web3Signer accepts (case-insensitive `type`, `signing_root`, unknown fields,
//! uint64 up to 2^64-1).

use serde_json::json;

use crate::common::*;

/// The one vector case that is a double vote against an earlier case of the same key when all
/// cases go through one slashing database in file order (vectors/README.md, "Slashing note").
const DOUBLE_VOTE_CASE: &str = "attestation_slot_after_fork_target_before__key0";
const DOUBLE_VOTE_EARLIER_CASE: &str = "attestation_epoch_before_fork__key0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_84_vectors_are_signed_byte_identically_through_the_server() {
    let cases = vector_files("web3signer");
    assert_eq!(cases.len(), 84, "vector set changed");
    let appliance = Appliance::with_vector_keys();
    let (server, client) = appliance.serve();

    let mut identical = 0;
    for (name, case) in &cases {
        let pubkey = case["pubkey"].as_str().unwrap();
        let (status, body) = sign(&client, pubkey, &case["request"]).await;
        if name == DOUBLE_VOTE_CASE {
            assert_eq!(status, 412, "{name} is a double vote here: {body}");
            assert_eq!(body["rule"], "double_vote", "{name}: {body}");
            continue;
        }
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(
            body,
            json!({ "signature": case["signature"] }),
            "{name}: signature"
        );
        identical += 1;
    }
    assert_eq!(identical, 83);

    // The same answers as bare text when the client does not accept JSON; a repeated request is
    // answered again (same signing root), so this also covers Web3Signer's idempotent re-sign.
    for (name, case) in cases.iter().filter(|(n, _)| n.starts_with("block_v2_")) {
        let (status, text) =
            sign_as_text(&client, case["pubkey"].as_str().unwrap(), &case["request"]).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert_eq!(
            text,
            case["signature"].as_str().unwrap(),
            "{name}: text signature"
        );
    }

    // A JSON answer says so, and is exactly Web3Signer's one-member object.
    let (name, case) = cases
        .iter()
        .find(|(n, _)| n.starts_with("block_v2_"))
        .unwrap();
    let response = client
        .request(
            http::Method::POST,
            &sign_path(case["pubkey"].as_str().unwrap()),
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            Some(serde_json::to_vec(&case["request"]).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{name}");
    assert_eq!(
        response.headers.get("content-type").unwrap(),
        "application/json",
        "{name}"
    );
    assert_eq!(
        std::str::from_utf8(&response.body).unwrap(),
        format!(
            r#"{{"signature":"{}"}}"#,
            case["signature"].as_str().unwrap()
        ),
        "{name}"
    );

    // The refused case on a fresh appliance (its own slashing database): byte-identical too.
    drop(server);
    let fresh = Appliance::with_vector_keys();
    let (_server, client) = fresh.serve();
    let case = vector_case(DOUBLE_VOTE_CASE);
    let (status, body) = sign(&client, case["pubkey"].as_str().unwrap(), &case["request"]).await;
    assert_eq!(
        status, 200,
        "{DOUBLE_VOTE_CASE} on a fresh database: {body}"
    );
    assert_eq!(body["signature"], case["signature"]);
    // …and then the earlier case is the refused one: the conflict is symmetric.
    let earlier = vector_case(DOUBLE_VOTE_EARLIER_CASE);
    let (status, body) = sign(
        &client,
        earlier["pubkey"].as_str().unwrap(),
        &earlier["request"],
    )
    .await;
    assert_eq!(status, 412, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_vectors_get_the_recommended_status_and_name_the_field() {
    let cases = vector_files("web3signer-negative");
    assert_eq!(cases.len(), 18, "negative vector set changed");
    let appliance = Appliance::with_vector_keys();
    let (_server, client) = appliance.serve();

    for (name, case) in &cases {
        let body = match (&case.get("raw_body"), &case.get("request")) {
            (Some(raw), _) => raw.as_str().unwrap().as_bytes().to_vec(),
            (None, Some(request)) => serde_json::to_vec(request).unwrap(),
            _ => panic!("{name}: neither raw_body nor request"),
        };
        let (status, answer) = request_raw(
            &client,
            http::Method::POST,
            &sign_path(case["path_pubkey"].as_str().unwrap()),
            JSON_HEADERS,
            Some(body),
        )
        .await;
        let expected = case["recommended_status"].as_u64().unwrap() as u16;
        assert_eq!(status, expected, "{name}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{name}: no error message in {answer}");
        // Every refusal that is about one field of a well-formed JSON object names it.
        let about_one_field = expected == 400
            && case.get("request").is_some()
            && !matches!(name.as_str(), "empty_body" | "malformed_json");
        if about_one_field {
            assert!(
                answer["field"].as_str().is_some_and(|f| !f.is_empty()),
                "{name}: no field named in {answer}"
            );
        }
    }
    // A signingRoot mismatch is the client's mistake: 400 naming the field (Web3Signer: 500).
    let mismatch = &cases
        .iter()
        .find(|(n, _)| n == "signing_root_mismatch")
        .unwrap()
        .1;
    let (status, answer) = sign(
        &client,
        mismatch["path_pubkey"].as_str().unwrap(),
        &mismatch["request"],
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("signingRoot"))
    );
    // Nothing was recorded by the refusals: the unmodified base request still signs.
    let base = vector_case("attestation__key0");
    let (status, answer) = sign(&client, base["pubkey"].as_str().unwrap(), &base["request"]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["signature"], base["signature"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spellings_web3signer_accepts_work_through_the_server() {
    let appliance = Appliance::with_vector_keys();
    let (_server, client) = appliance.serve();

    let attestation = vector_case("attestation__key0");
    let pubkey = attestation["pubkey"].as_str().unwrap().to_owned();
    let expected = json!({ "signature": attestation["signature"] });

    // `type` in any case.
    for spelling in ["attestation", "Attestation", "aTtEsTaTiOn"] {
        let mut request = attestation["request"].clone();
        request["type"] = json!(spelling);
        let (status, body) = sign(&client, &pubkey, &request).await;
        assert_eq!((status, &body), (200, &expected), "type {spelling}");
    }

    // `signing_root` as well as `signingRoot`; a wrong one under either spelling is refused.
    let mut snake = attestation["request"].clone();
    let root = snake
        .as_object_mut()
        .unwrap()
        .remove("signingRoot")
        .unwrap();
    snake["signing_root"] = root;
    let (status, body) = sign(&client, &pubkey, &snake).await;
    assert_eq!((status, &body), (200, &expected), "signing_root");
    snake["signing_root"] = json!(format!("0x{}", "00".repeat(32)));
    let (status, body) = sign(&client, &pubkey, &snake).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "signing_root", "{body}");

    // Unknown fields are ignored, at the top level and inside objects.
    let mut extra = attestation["request"].clone();
    extra["unknown_top_level"] = json!({"nested": [1, 2, 3]});
    extra["fork_info"]["unknown_in_fork_info"] = json!("x");
    extra["attestation"]["unknown_in_attestation"] = json!(null);
    extra["attestation"]["source"]["unknown_in_checkpoint"] = json!(true);
    let (status, body) = sign(&client, &pubkey, &extra).await;
    assert_eq!((status, &body), (200, &expected), "unknown fields");

    // uint64 as decimal strings up to 2^64-1; 2^64 is refused naming the field.
    let exit = vector_case("voluntary_exit_max_uint64__key0");
    let (status, body) = sign(&client, &pubkey, &exit["request"]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["signature"], exit["signature"]);
    assert!(
        serde_json::to_string(&exit["request"])
            .unwrap()
            .contains("18446744073709551615"),
        "the vector carries u64::MAX"
    );
    let mut overflow = exit["request"].clone();
    overflow["voluntary_exit"]["validator_index"] = json!("18446744073709551616");
    overflow.as_object_mut().unwrap().remove("signingRoot");
    let (status, body) = sign(&client, &pubkey, &overflow).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "voluntary_exit.validator_index", "{body}");

    // The slashing check runs before signing: a refused request returns no signature.
    let mut double = attestation["request"].clone();
    double["attestation"]["beacon_block_root"] = json!(format!("0x{}", "77".repeat(32)));
    double.as_object_mut().unwrap().remove("signingRoot");
    let (status, body) = sign(&client, &pubkey, &double).await;
    assert_eq!(status, 412, "{body}");
    assert!(body.get("signature").is_none());
}
