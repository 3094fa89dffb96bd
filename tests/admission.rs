//! An unknown client is refused before its request body is read: the attack is a client with
//! a valid certificate from the CA, but not named in the policy, announcing a large body and
//! never sending it (holding a connection and a read buffer for the body timeout). The real
//! binary must answer 403 at once; a named client announcing the same body is still waited for
//! (the control that shows the test can tell the two apart).

use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::authz::PolicyAppliance;
use crate::common::*;

/// Send the headers of a signing request announcing `length` body bytes, none of them, and
/// return what the server answers within `wait` (None: nothing yet).
async fn announce_body(
    server: &Server,
    config: std::sync::Arc<rustls::ClientConfig>,
    path: &str,
    length: usize,
    wait: Duration,
) -> Option<String> {
    let address = server.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = vec![0u8; 4096];
    match tokio::time::timeout(wait, tls.read(&mut answer)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&answer[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_client_is_refused_before_its_body_is_read() {
    let setup = PolicyAppliance::create();
    let server = Server::start(&setup.appliance);
    let sign_path = format!("/api/v1/eth2/sign/{}", setup.key1);
    for path in [
        sign_path.as_str(),
        "/keystake/v1/admin/slashing/import",
        "/eth/v1/keystores",
    ] {
        let answer = announce_body(
            &server,
            setup.appliance.client_config("u"),
            path,
            500_000,
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|| panic!("{path}: no answer to an unknown client within 5 s"));
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
    }
    // Control: a client the policy names is waited for (its body may still come).
    let waited = announce_body(
        &server,
        setup.appliance.client_config("a"),
        &sign_path,
        500_000,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(waited, None, "a named client was answered before its body");
}
