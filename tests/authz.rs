//! Authorization over real mutual TLS with the real binary: clients A (attestations for key 1),
//! B (everything for key 2), C (named, no grants), D (revoked certificate), U (valid certificate,
//! not in the policy) and W (wildcard "all" on all keys) × every operation × both APIs × both
//! keys; exactly the granted cells may succeed.

use std::sync::Arc;

use keystake_signer::net::client::{ClientError, MtlsClient};
use keystake_signer::tools::grpc_client::GrpcClient;
use serde_json::Value;

use crate::common::*;

/// The appliance of the matrix: vector keys 0 and 1 imported, clients issued from the CA with
/// `certs generate --ca-dir`, D revoked with `certs revoke`, a policy naming A, B, C, D, W.
pub struct PolicyAppliance {
    pub appliance: Appliance,
    pub key1: String,
    pub key2: String,
}

pub const CLIENTS: [&str; 6] = ["a", "b", "c", "d", "u", "w"];

impl PolicyAppliance {
    pub fn create() -> PolicyAppliance {
        let appliance = Appliance::create();
        let secrets = vector_secret_keys();
        let key1 = secret_key_from_hex(&secrets[0]).public_key().to_hex();
        let key2 = secret_key_from_hex(&secrets[1]).public_key().to_hex();
        appliance.import_vector_key(0);
        appliance.import_vector_key(1);
        let certs = appliance.certs();
        let mut args = vec![
            "certs".to_owned(),
            "generate".into(),
            "--out".into(),
            certs.to_str().unwrap().into(),
            "--ca-dir".into(),
            certs.to_str().unwrap().into(),
        ];
        for client in CLIENTS {
            args.push("--client".into());
            args.push(client.into());
        }
        run_ok(&args);
        let crl = certs.join("crl.pem");
        run_ok(&[
            "certs",
            "revoke",
            "--ca-dir",
            certs.to_str().unwrap(),
            "--cert",
            certs.join("d.pem").to_str().unwrap(),
            "--out",
            crl.to_str().unwrap(),
        ]);
        let policy = format!(
            r#"
[[client]]
cn = "a"
[[client.grant]]
keys = ["{key1}"]
operations = ["attestation"]

[[client]]
cn = "b"
[[client.grant]]
keys = ["{key2}"]
operations = ["all", "voluntary_exit", "deposit"]

[[client]]
cn = "c"

[[client]]
cn = "d"
[[client.grant]]
keys = "all"
operations = ["all", "voluntary_exit", "deposit"]

[[client]]
cn = "w"
[[client.grant]]
keys = "all"
operations = ["all"]
"#
        );
        std::fs::write(appliance.path().join("policy.toml"), policy).unwrap();
        run_ok(&[
            "policy",
            "check",
            "--policy",
            appliance.path().join("policy.toml").to_str().unwrap(),
        ]);
        let config = std::fs::read_to_string(&appliance.config)
            .unwrap()
            // The example configuration names policy.toml already (written above).
            .replace("# crl = ", "crl = ");
        std::fs::write(&appliance.config, config).unwrap();
        PolicyAppliance {
            appliance,
            key1,
            key2,
        }
    }

    /// Whether the policy above grants `operation` on key 1 / key 2 to `client`.
    pub fn granted(client: &str, operation: &str, key_index: usize) -> bool {
        let explicit = matches!(operation, "voluntary_exit" | "deposit");
        match client {
            "a" => key_index == 1 && operation == "attestation",
            "b" => key_index == 2,
            "w" => !explicit,
            // c: no grants; d: revoked (cannot connect); u: not in the policy.
            _ => false,
        }
    }
}

/// The signing operations and the vector used to exercise each.
pub const SIGNING_OPERATIONS: [(&str, &str); 8] = [
    ("block", "block_v2_capella"),
    ("attestation", "attestation"),
    ("aggregation", "aggregation_slot"),
    ("sync_committee", "sync_committee_message"),
    ("randao", "randao_reveal"),
    ("voluntary_exit", "voluntary_exit"),
    ("deposit", "deposit"),
    ("validator_registration", "validator_registration"),
];

/// The vector `<base>__key<n>.json` (n = 0 for key 1, 1 for key 2).
pub fn vector(base: &str, key_index: usize) -> Value {
    vector_case(&format!("{base}__key{}", key_index - 1))
}

enum Outcome {
    /// The TLS handshake (or the first request) failed: no connection.
    NoConnection,
    Status(u16),
}

impl From<Result<(u16, Value), ClientError>> for Outcome {
    fn from(result: Result<(u16, Value), ClientError>) -> Outcome {
        match result {
            Ok((status, _)) => Outcome::Status(status),
            Err(_) => Outcome::NoConnection,
        }
    }
}

async fn rest_cell(client: &MtlsClient, key: &str, body: &Value) -> Outcome {
    try_post(client, &sign_path(key), body).await.into()
}

async fn rest_reload(client: &MtlsClient) -> Outcome {
    try_request(
        client,
        http::Method::POST,
        "/keystake/v1/admin/reload",
        &[],
        None,
    )
    .await
    .into()
}

async fn grpc_cell(
    client: Option<&GrpcClient>,
    key: &str,
    body: &Value,
) -> Result<(), tonic::Code> {
    let Some(client) = client else {
        return Err(tonic::Code::Unavailable);
    };
    client
        .sign(key, &serde_json::to_string(body).unwrap())
        .await
        .map(|_| ())
        .map_err(|status| status.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_over_both_apis() {
    let setup = PolicyAppliance::create();
    let server = Server::start(&setup.appliance);
    let keys = [(1usize, setup.key1.clone()), (2, setup.key2.clone())];
    let mut checked = 0;
    let mut succeeded = 0;
    for client_name in CLIENTS {
        let tls: Arc<rustls::ClientConfig> = setup.appliance.client_config(client_name);
        let rest = server.client(tls.clone());
        // TLS 1.3 checks the client certificate after the client considers the handshake
        // done, so a revoked client may "connect" and then fail on its first call.
        let grpc = GrpcClient::connect(&server.url, tls).await.ok();
        if client_name != "d" {
            assert!(
                grpc.is_some(),
                "client {client_name} must connect over gRPC"
            );
        }
        for (operation, base) in SIGNING_OPERATIONS {
            for (key_index, key) in &keys {
                let body = vector(base, *key_index)["request"].clone();
                let expected = PolicyAppliance::granted(client_name, operation, *key_index);
                let rest_outcome = rest_cell(&rest, key, &body).await;
                match (&rest_outcome, client_name, expected) {
                    (Outcome::NoConnection, "d", _) => {}
                    (Outcome::Status(200), _, true) => succeeded += 1,
                    (Outcome::Status(403), _, false) if client_name != "d" => {}
                    (Outcome::Status(s), _, _) => panic!(
                        "REST {client_name} {operation} key{key_index}: status {s}, expected {}",
                        if expected { 200 } else { 403 }
                    ),
                    (Outcome::NoConnection, _, _) => {
                        panic!("REST {client_name} {operation} key{key_index}: no connection")
                    }
                }
                let grpc_outcome = grpc_cell(grpc.as_ref(), key, &body).await;
                match (grpc_outcome, client_name, expected) {
                    (Err(code), "d", _) => assert_ne!(code, tonic::Code::PermissionDenied),
                    (Ok(()), _, true) => succeeded += 1,
                    (Err(tonic::Code::PermissionDenied), _, false) if client_name != "d" => {}
                    (other, _, _) => panic!(
                        "gRPC {client_name} {operation} key{key_index}: {other:?}, expected {}",
                        if expected { "OK" } else { "PERMISSION_DENIED" }
                    ),
                }
                checked += 2;
            }
        }
        // slashing_admin: export one key's history.
        for (key_index, key) in &keys {
            let expected = PolicyAppliance::granted(client_name, "slashing_admin", *key_index);
            let body = serde_json::json!({ "public_keys": [key] }).to_string();
            let rest_outcome: Outcome = try_request(
                &rest,
                http::Method::POST,
                "/keystake/v1/admin/slashing/export",
                &[("content-type", "application/json")],
                Some(body.into_bytes()),
            )
            .await
            .into();
            match (rest_outcome, client_name) {
                (Outcome::NoConnection, "d") => {}
                (Outcome::Status(200), _) if expected => succeeded += 1,
                (Outcome::Status(403), _) if !expected => {}
                (Outcome::Status(s), _) => {
                    panic!("REST {client_name} slashing export key{key_index}: status {s}")
                }
                (Outcome::NoConnection, _) => panic!("REST {client_name}: no connection"),
            }
            if let Some(grpc) = &grpc {
                let raw = hex::decode(key.trim_start_matches("0x")).unwrap();
                match (grpc.export_slashing_protection(&[raw]).await, client_name) {
                    (Err(status), "d") => {
                        assert_ne!(status.code(), tonic::Code::PermissionDenied)
                    }
                    (Ok(json), _) if expected => {
                        assert!(json.contains(key.as_str()), "{json}");
                        succeeded += 1;
                    }
                    (Err(status), _)
                        if !expected && status.code() == tonic::Code::PermissionDenied => {}
                    (other, _) => panic!("gRPC {client_name} slashing export: {other:?}"),
                }
            }
            checked += 2;
        }
        // operator: the reload admin call needs an `operator` grant on all keys (only W; B's
        // `all` is on key 2 only).
        let expected = client_name == "w";
        match (rest_reload(&rest).await, client_name) {
            (Outcome::NoConnection, "d") => {}
            (Outcome::Status(200), _) if expected => succeeded += 1,
            (Outcome::Status(403), _) if !expected => {}
            (Outcome::Status(s), _) => panic!("REST {client_name} reload: status {s}"),
            (Outcome::NoConnection, _) => panic!("REST {client_name} reload: no connection"),
        }
        if let Some(grpc) = &grpc {
            match (grpc.reload_policy().await, expected, client_name) {
                (Err(status), _, "d") => assert_ne!(status.code(), tonic::Code::PermissionDenied),
                (Ok(summary), true, _) => {
                    assert!(summary.enforced && summary.crl_reloaded);
                    succeeded += 1;
                }
                (Err(status), false, _) if status.code() == tonic::Code::PermissionDenied => {}
                (other, _, _) => panic!("gRPC {client_name} reload: {other:?}"),
            }
        }
        checked += 2;
    }
    assert_eq!(
        checked,
        CLIENTS.len() * ((SIGNING_OPERATIONS.len() + 1) * 2 * 2 + 2)
    );
    // Signing: A 1 cell, B 8 operations on key 2, W 6 operations on 2 keys; slashing export:
    // B on key 2, W on both keys; all on both APIs; plus the reload call of W on both.
    assert_eq!(succeeded, (1 + 8 + 12) * 2 + 3 * 2 + 2);
    // Refusals are logged with the client identity.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("authorization refused"), "{log}");
    assert!(
        log.contains("client=u"),
        "unknown client U not named in the log:\n{log}"
    );
}
