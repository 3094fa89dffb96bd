//! `/metrics` of the real binary after a known run over both APIs: every counter equals what
//! the test sent.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use keystake_signer::tools::grpc_client::GrpcClient;
use serde_json::Value;

use crate::authz::{vector, PolicyAppliance};
use crate::common::*;

/// `serve` with a metrics listener on port 0: the server and the metrics address.
pub fn start(appliance: &Appliance) -> (Server, String) {
    let mut server = Server::start_with(appliance, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = server
        .stdout
        .wait_for("metrics on http://", Duration::from_secs(30))
        .expect("no metrics address printed");
    let metrics = metrics.trim_end_matches("/metrics").to_owned();
    (server, metrics)
}

/// GET /metrics over plain HTTP; every sample line as `name{labels}` → value.
pub fn scrape(address: &str) -> HashMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counts_equal_what_was_sent() {
    let setup = PolicyAppliance::create();
    let (server, metrics) = start(&setup.appliance);
    let k1 = setup.key1.clone();
    let body = |v: &Value| serde_json::to_string(v).unwrap();
    let w_rest = server.client(setup.appliance.client_config("w"));
    let w_grpc = GrpcClient::connect(&server.url, setup.appliance.client_config("w"))
        .await
        .unwrap();
    let a_grpc = GrpcClient::connect(&server.url, setup.appliance.client_config("a"))
        .await
        .unwrap();
    let u_rest = server.client(setup.appliance.client_config("u"));

    for target in 1..=5 {
        assert_eq!(sign(&w_rest, &k1, &attestation(0, target, 1)).await.0, 200);
    }
    for _ in 0..3 {
        let randao = body(&vector("randao_reveal", 1)["request"]);
        w_grpc.sign(&k1, &randao).await.unwrap();
    }
    for target in 1..=2 {
        assert_eq!(sign(&w_rest, &k1, &attestation(0, target, 9)).await.0, 412);
    }
    let block = body(&vector("block_v2_capella", 1)["request"]);
    assert_eq!(
        a_grpc.sign(&k1, &block).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    for _ in 0..2 {
        assert_eq!(sign(&u_rest, &k1, &attestation(0, 50, 1)).await.0, 403);
    }
    let batch: Vec<(String, String)> = (10..14)
        .map(|t| (k1.clone(), body(&attestation(9, t, 1))))
        .collect();
    assert!(w_grpc
        .sign_batch(&batch)
        .await
        .unwrap()
        .iter()
        .all(|r| r.is_ok()));
    let unknown = format!("0x{}", "ab".repeat(48));
    assert_eq!(
        w_grpc
            .sign(&unknown, &body(&attestation(0, 1, 1)))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );

    let samples = scrape(&metrics);
    let requests = |api: &str, kind: &str, outcome: &str| {
        value(
            &samples,
            &format!(
                "keystake_requests_total{{api=\"{api}\",outcome=\"{outcome}\",type=\"{kind}\"}}"
            ),
        )
    };
    assert_eq!(requests("rest", "ATTESTATION", "ok"), 5.0);
    assert_eq!(requests("grpc", "RANDAO_REVEAL", "ok"), 3.0);
    assert_eq!(requests("rest", "ATTESTATION", "slashing_refused"), 2.0);
    assert_eq!(requests("grpc", "BLOCK_V2", "forbidden"), 1.0);
    assert_eq!(requests("rest", "unknown", "forbidden"), 2.0);
    assert_eq!(requests("grpc", "ATTESTATION", "ok"), 4.0);
    assert_eq!(requests("grpc", "unknown", "not_found"), 1.0);
    let total_requests: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("keystake_requests_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total_requests, 5.0 + 3.0 + 2.0 + 1.0 + 2.0 + 4.0 + 1.0);

    let refusals = |api: &str, op: &str| {
        value(
            &samples,
            &format!("keystake_authorization_refusals_total{{api=\"{api}\",operation=\"{op}\"}}"),
        )
    };
    assert_eq!(refusals("grpc", "block"), 1.0);
    assert_eq!(refusals("rest", "any"), 2.0);

    let phase_count = |phase: &str| {
        value(
            &samples,
            &format!("keystake_signing_phase_seconds_count{{phase=\"{phase}\"}}"),
        )
    };
    // Signed: 5 + 3 + 4; reached the database: those plus the 2 slashing refusals.
    assert_eq!(phase_count("unseal"), 12.0);
    assert_eq!(phase_count("bls"), 12.0);
    assert_eq!(phase_count("total"), 12.0);
    assert_eq!(phase_count("slashing_db"), 14.0);
    assert_eq!(value(&samples, "keystake_keys_loaded"), 2.0);
    assert_eq!(value(&samples, "keystake_hsm_session_up"), 1.0);
    assert_eq!(value(&samples, "keystake_slashing_db_up"), 1.0);
    assert!(samples
        .keys()
        .any(|k| k.starts_with("keystake_build_info{version=")));
}
