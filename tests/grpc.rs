//! The gRPC API through real sockets: the real binary, mutual TLS on 127.0.0.1, the crate's
//! `GrpcClient`. Compared byte for byte with the REST API on the same appliance.

use keystake_signer::net::grpc::pb;
use keystake_signer::tools::grpc_client::GrpcClient;
use serde_json::Value;

use crate::authz::{vector, PolicyAppliance};
use crate::common::*;

fn hex_bytes(text: &str) -> Vec<u8> {
    hex::decode(text.trim_start_matches("0x")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_signs_every_vector_type_byte_identical_to_rest() {
    // Without a policy, holding the three vector keys.
    let appliance = Appliance::with_vector_keys();
    let server = Server::start(&appliance);
    let tls = appliance.client_config("client");
    let rest = server.client(tls.clone());
    let grpc = GrpcClient::connect(&server.url, tls).await.unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    let mut signed = 0;
    let cases = vector_files("web3signer");
    let total = cases.len();
    for (name, case) in cases {
        let pubkey = case["pubkey"].as_str().unwrap();
        let request = &case["request"];
        let (status, body) = sign(&rest, pubkey, request).await;
        let grpc_result = grpc
            .sign(pubkey, &serde_json::to_string(request).unwrap())
            .await;
        match grpc_result {
            Ok(response) => {
                assert_eq!(
                    status, 200,
                    "{name}: gRPC signed, REST answered {status} {body}"
                );
                let rest_signature = hex_bytes(body["signature"].as_str().unwrap());
                assert_eq!(response.signature, rest_signature, "{name}");
                assert_eq!(
                    response.signature,
                    hex_bytes(case["signature"].as_str().unwrap()),
                    "{name}: not the vector's signature"
                );
                assert_eq!(
                    response.signing_root,
                    hex_bytes(case["signing_root"].as_str().unwrap()),
                    "{name}"
                );
                assert_eq!(response.public_key, hex_bytes(pubkey), "{name}");
                kinds.insert(response.kind.clone());
                signed += 1;
            }
            Err(grpc_status) => {
                // Only the documented double vote of the vector set may be refused, and both
                // APIs must refuse it the same way.
                assert_eq!(
                    name, "attestation_slot_after_fork_target_before__key0",
                    "{name}: {grpc_status:?}"
                );
                assert_eq!(status, 412, "{name}");
                assert_eq!(grpc_status.code(), tonic::Code::FailedPrecondition);
                assert_eq!(grpc_status.message(), body["error"].as_str().unwrap());
            }
        }
    }
    assert_eq!(
        signed,
        total - 1,
        "every vector but the documented double vote signs"
    );
    let expected: std::collections::BTreeSet<String> = [
        "ATTESTATION",
        "AGGREGATION_SLOT",
        "AGGREGATE_AND_PROOF",
        "AGGREGATE_AND_PROOF_V2",
        "BLOCK_V2",
        "DEPOSIT",
        "RANDAO_REVEAL",
        "VOLUNTARY_EXIT",
        "SYNC_COMMITTEE_MESSAGE",
        "SYNC_COMMITTEE_SELECTION_PROOF",
        "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
        "VALIDATOR_REGISTRATION",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(kinds, expected);

    // Key listing and health agree with REST.
    let listed: Vec<Vec<u8>> = grpc
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.public_key)
        .collect();
    let rest_keys = public_keys(&rest).await;
    assert_eq!(
        listed,
        rest_keys.iter().map(|k| hex_bytes(k)).collect::<Vec<_>>()
    );
    let health = grpc.health().await.unwrap();
    assert!(health.up, "{health:?}");
    assert_eq!(health.keys_loaded, 3);

    // Error mapping: unknown key, malformed identifier, malformed body.
    let unknown = format!("0x{}", "ab".repeat(48));
    let attestation = serde_json::to_string(&vector("attestation", 1)["request"]).unwrap();
    assert_eq!(
        grpc.sign(&unknown, &attestation).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        grpc.sign("0x12", &attestation).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let key0 = vector("attestation", 1)["pubkey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        grpc.sign(&key0, "{not json").await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_batch_dry_run_and_combine() {
    let setup = PolicyAppliance::create();
    let server = Server::start(&setup.appliance);
    // A holds attestations for key 1 only.
    let a = GrpcClient::connect(&server.url, setup.appliance.client_config("a"))
        .await
        .unwrap();
    let body = |v: &Value| serde_json::to_string(v).unwrap();
    let (k1, k2) = (setup.key1.clone(), setup.key2.clone());
    let items = vec![
        (k1.clone(), body(&attestation(100, 101, 1))), // valid
        (k1.clone(), body(&attestation(100, 101, 2))), // double vote against item 0
        (k2.clone(), body(&attestation(100, 101, 1))), // key 2: not granted to A
        (k1.clone(), body(&attestation(101, 102, 1))), // valid
        (k1.clone(), body(&attestation(99, 103, 1))),  // surrounds item 3
        (k1.clone(), body(&vector("block_v2_capella", 1)["request"])), // blocks: not granted
        (
            format!("0x{}", "cd".repeat(48)),
            body(&attestation(1, 2, 1)),
        ), // unknown key
        (k1.clone(), "[]".to_owned()),                 // malformed
        (k1.clone(), body(&attestation(100, 101, 1))), // identical re-request of item 0
    ];
    let results = a.sign_batch(&items).await.unwrap();
    assert_eq!(results.len(), items.len());
    let codes: Vec<i32> = results
        .iter()
        .map(|r| match r {
            Ok(_) => 0,
            Err(e) => e.code,
        })
        .collect();
    let c = |code: tonic::Code| code as i32;
    assert_eq!(
        codes,
        vec![
            0,
            c(tonic::Code::FailedPrecondition),
            c(tonic::Code::PermissionDenied),
            0,
            c(tonic::Code::FailedPrecondition),
            c(tonic::Code::PermissionDenied),
            c(tonic::Code::NotFound),
            c(tonic::Code::InvalidArgument),
            0,
        ],
        "{results:?}"
    );
    let errors: Vec<&pb::Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors[0].http_status, 412);
    assert_eq!(errors[0].rule, "double_vote");
    assert_eq!(errors[1].http_status, 403);
    assert_eq!(errors[2].rule, "new_surrounds_previous");
    let first = results[0].as_ref().unwrap();
    assert_eq!(first.signature, results[8].as_ref().unwrap().signature);

    // Dry run: nothing recorded, same verdicts as REST's slashable endpoint.
    let fresh = body(&attestation(200, 201, 1));
    let verdict = a.check_slashing(&k1, &fresh).await.unwrap();
    assert!(!verdict.refused && verdict.protected && verdict.verdict == "valid");
    let verdict = a.check_slashing(&k1, &fresh).await.unwrap();
    assert_eq!(verdict.verdict, "valid", "the dry run recorded something");
    let verdict = a
        .check_slashing(&k1, &body(&attestation(100, 101, 2)))
        .await
        .unwrap();
    assert!(verdict.refused);
    assert_eq!(verdict.verdict, "double_vote");
    assert!(verdict.conflict_json.contains("signing_root") || !verdict.conflict_json.is_empty());
    let rest = server.client(setup.appliance.client_config("a"));
    let response = rest
        .request(
            http::Method::POST,
            &format!("/api/v1/eth2/slashable/{k1}"),
            &[("content-type", "application/json")],
            Some(body(&attestation(100, 101, 2)).into_bytes()),
        )
        .await
        .unwrap();
    let rest_answer: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(rest_answer["verdict"], "double_vote");
    assert_eq!(rest_answer["reason"].as_str().unwrap(), verdict.reason);
    let verdict = a
        .check_slashing(&k1, &body(&attestation(100, 101, 1)))
        .await
        .unwrap();
    assert_eq!(verdict.verdict, "same_data");
    assert_eq!(
        a.check_slashing(&k2, &fresh).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    // Slashing-protection export/import (admin): W may, A may not.
    let w = GrpcClient::connect(&server.url, setup.appliance.client_config("w"))
        .await
        .unwrap();
    assert_eq!(
        a.export_slashing_protection(&[]).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let exported = w.export_slashing_protection(&[]).await.unwrap();
    let document: Value = serde_json::from_str(&exported).unwrap();
    let records = document["data"].as_array().unwrap();
    let k1_record = records
        .iter()
        .find(|r| r["pubkey"].as_str() == Some(k1.as_str()))
        .expect("key 1 in the export");
    let targets = field_of_each(&k1_record["signed_attestations"], "target_epoch");
    assert_eq!(targets, vec!["101", "102"], "{k1_record}");
    assert_eq!(
        a.import_slashing_protection(&exported)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    let summary = w.import_slashing_protection(&exported).await.unwrap();
    assert_eq!(summary.attestations_imported, 0, "{summary:?}");
    assert!(summary.duplicates_skipped >= 2);
    assert_eq!(
        w.import_slashing_protection("{}").await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    // Key listing is filtered by the policy.
    let keys = a.list_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].public_key, hex_bytes(&k1));
    let u = GrpcClient::connect(&server.url, setup.appliance.client_config("u"))
        .await
        .unwrap();
    assert_eq!(
        u.list_keys().await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    // Combine the threshold vectors (any client the policy names; U is refused).
    for (name, case) in vector_files("threshold") {
        let t = case["t"].as_u64().unwrap() as u32;
        let shares = case["shares"].as_array().unwrap();
        let mut request = pb::CombineRequest {
            threshold: t,
            group_public_key: hex_bytes(case["master_pubkey"].as_str().unwrap()),
            message: hex_bytes(case["signing_root"].as_str().unwrap()),
            partials: shares
                .iter()
                .rev()
                .map(|s| pb::Partial {
                    share_index: s["index"].as_u64().unwrap() as u32,
                    signature: hex_bytes(s["partial_signature"].as_str().unwrap()),
                })
                .collect(),
            share_public_keys: shares
                .iter()
                .map(|s| hex_bytes(s["pubkey"].as_str().unwrap()))
                .collect(),
            verify_partials: true,
        };
        let combined = a.combine(request.clone()).await.unwrap();
        assert_eq!(
            combined.signature,
            hex_bytes(case["master_signature"].as_str().unwrap()),
            "{name}"
        );
        assert!(combined.culprits.is_empty());
        // A corrupted partial is named as a culprit when enough others remain.
        if shares.len() > t as usize {
            request.partials[0].signature = request.partials[1].signature.clone();
            let combined = a.combine(request.clone()).await.unwrap();
            assert_eq!(combined.culprits.len(), 1, "{name}");
            assert_eq!(
                combined.signature,
                hex_bytes(case["master_signature"].as_str().unwrap())
            );
        }
        request.partials.truncate(t as usize - 1);
        assert_eq!(
            a.combine(request.clone()).await.unwrap_err().code(),
            tonic::Code::InvalidArgument,
            "{name}"
        );
        assert_eq!(
            u.combine(request).await.unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
