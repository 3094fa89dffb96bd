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

/// gRPC: tonic decodes a whole message before a handler runs, so the client is checked first.
/// The attack: open an HTTP/2 stream to `Signer/Sign`, announce a 1 MiB message in the gRPC
/// frame header and never send it. An unknown client gets its PermissionDenied answer at once;
/// a named client is waited for (the message may still come) — the control.
async fn stalled_grpc_message(
    server: &Server,
    config: std::sync::Arc<rustls::ClientConfig>,
    wait: Duration,
) -> Option<String> {
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let address = server.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    // gRPC frame header: not compressed, length 1 MiB; then nothing, ever.
    let mut head = vec![0u8];
    head.extend_from_slice(&(1u32 << 20).to_be_bytes());
    let body = StreamBody::new(
        futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
            bytes::Bytes::from(head),
        ))])
        .chain(futures_util::stream::pending()),
    );
    let request = http::Request::post(format!("{}/keystake.v1.Signer/Sign", server.url))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    match tokio::time::timeout(wait, sender.send_request(request)).await {
        Ok(Ok(response)) => Some(
            response
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_else(|| format!("HTTP {}", response.status())),
        ),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refuses_an_unknown_client_before_decoding_its_message() {
    let setup = PolicyAppliance::create();
    let server = Server::start(&setup.appliance);
    let refused = stalled_grpc_message(
        &server,
        setup.appliance.client_config("u"),
        Duration::from_secs(5),
    )
    .await;
    let permission_denied = (tonic::Code::PermissionDenied as i32).to_string();
    assert_eq!(refused.as_deref(), Some(permission_denied.as_str()));
    let waited = stalled_grpc_message(
        &server,
        setup.appliance.client_config("a"),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        waited, None,
        "a named client was answered before its message"
    );
}
