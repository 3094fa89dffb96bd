//! Real-client interoperability (issue #8): the loopback forwarder (`keystake-signer connect`),
//! the appliance answering the way Lodestar needs (`Connection: close`, bursts of fresh
//! connections), PKCS#12 client identities read by OpenSSL, and — run by `scripts/test.sh` as a
//! separate serial step, because each run takes about a minute — a Lodestar devnet whose every
//! validator signs through the forwarder and a real appliance, once straight through and once with
//! the appliance SIGKILLed and restarted mid-chain.
//!
//! Everything is real: the binary, SoftHSM2, SQLite, rcgen certificates, TCP on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

// ------------------------------------------------------------------------------------------------
// Processes

/// A child process killed (SIGKILL) and reaped on drop, with its stderr in a log file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawn `command` (the binary) and wait for a stdout line starting with `ready_prefix`;
    /// returns the rest of that line.
    fn spawn(
        mut command: Command,
        log: PathBuf,
        log_filter: &str,
        ready_prefix: &str,
    ) -> (Process, String) {
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = command
            .env("KEYSTAKE_LOG", log_filter)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let ready = StdoutLines::of(&mut child).wait_for(ready_prefix, Duration::from_secs(30));
        let mut process = Process { child, log };
        match ready {
            Some(rest) => (process, rest),
            None => {
                process.kill();
                panic!("{command:?} did not start:\n{}", process.log_text());
            }
        }
    }

    fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `serve` on `listen` (port 0 allowed); returns the process and the bound address.
fn start_appliance(appliance: &Appliance, listen: &str, log: PathBuf) -> (Process, SocketAddr) {
    let (process, url) = Process::spawn(
        serve_command(appliance, listen),
        log,
        "info,keystake_signer=debug",
        "listening on https://",
    );
    (process, url.parse().unwrap())
}

/// `connect --listen <listen> --upstream <upstream>` with the named client identity files.
fn connect_args(listen: &str, upstream: &str, ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
    [
        "connect",
        "--listen",
        listen,
        "--upstream",
        upstream,
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Run `connect` with `args` until it forwards; returns the process and its address.
fn spawn_forwarder(args: &[String], log: PathBuf) -> (Process, SocketAddr) {
    let mut command = Command::new(BIN);
    command.args(args);
    let (process, rest) = Process::spawn(command, log, "info", "forwarding on http://");
    let address = rest.split_whitespace().next().unwrap().parse().unwrap();
    (process, address)
}

/// `connect` on 127.0.0.1:0 in front of `upstream` with the named client identity files.
fn start_forwarder(
    upstream: SocketAddr,
    ca: &Path,
    cert: &Path,
    key: &Path,
    log: PathBuf,
) -> (Process, SocketAddr) {
    let upstream = format!("https://{upstream}");
    spawn_forwarder(&connect_args("127.0.0.1:0", &upstream, ca, cert, key), log)
}

fn forwarder_for(appliance: &Appliance, upstream: SocketAddr, name: &str) -> (Process, SocketAddr) {
    let certs = appliance.certs();
    start_forwarder(
        upstream,
        &certs.join("ca.pem"),
        &certs.join("client.pem"),
        &certs.join("client.key"),
        appliance.path().join(format!("{name}.log")),
    )
}

// ------------------------------------------------------------------------------------------------
// Raw HTTP/1.1, so tests see exactly what goes over the socket (Connection headers, closes).

#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Write one request and read one `Content-Length`-delimited response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();

    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response headers");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..header_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .expect("responses here carry Content-Length");
    let mut body = buffer[header_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Whether the peer closes the connection within two seconds (EOF or reset).
async fn closed_by_peer<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes after the response"),
        Err(_) => false,
    }
}

/// One sign request with `Connection: close` (Lodestar's way): signed with `expected`, the
/// answer says `Connection: close`, and the socket is closed after it.
async fn assert_signed_then_closed<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
    request: &[u8],
    expected: &str,
) {
    let answer = exchange(stream, "POST", path, &SIGN_HEADERS, request).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["signature"], expected);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(
        closed_by_peer(stream).await,
        "Connection: close not honoured"
    );
}

/// A TLS connection to the appliance speaking HTTP/1.1 with the named client identity.
async fn tls_connect(
    appliance: &Appliance,
    address: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = (*appliance.client_config("client")).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.unwrap();
    connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// The `aggregation_slot__key0` vector: its request, key, and the signature it must produce.
/// AGGREGATION_SLOT has no slashing rule, so the same request may be signed any number of times.
fn aggregation_slot_vector() -> (String, Vec<u8>, String) {
    let case = vector_case("aggregation_slot__key0");
    (
        case["pubkey"].as_str().unwrap().to_owned(),
        serde_json::to_vec(&case["request"]).unwrap(),
        case["signature"].as_str().unwrap().to_owned(),
    )
}

/// An appliance holding vector key 0, served on 127.0.0.1:0.
fn vector_appliance() -> (Appliance, Process, SocketAddr) {
    let appliance = Appliance::create();
    appliance.import_vector_key(0);
    let (server, address) = start_appliance(
        &appliance,
        "127.0.0.1:0",
        appliance.path().join("serve.log"),
    );
    (appliance, server, address)
}

const SIGN_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "application/json"),
    ("Accept", "*/*"),
    ("Connection", "close"),
];

// ------------------------------------------------------------------------------------------------
// Forwarder

#[test]
fn forwarder_refuses_non_loopback_unless_forced() {
    let appliance = Appliance::create();
    let certs = appliance.certs();
    let args = |listen: &str| {
        connect_args(
            listen,
            "https://127.0.0.1:9",
            &certs.join("ca.pem"),
            &certs.join("client.pem"),
            &certs.join("client.key"),
        )
    };
    for address in ["0.0.0.0:0", "[::]:0"] {
        let (ok, stdout, stderr) = run(&args(address));
        assert!(!ok, "{address} accepted: {stdout}");
        assert!(
            stderr.contains("refusing to listen") && stderr.contains("--allow-non-loopback"),
            "{stderr}"
        );
        assert!(!stdout.contains("forwarding on"), "{stdout}");
    }

    // Forced: it starts, says loudly what it does, and still works from loopback.
    let mut forced_args = args("0.0.0.0:0");
    forced_args.push("--allow-non-loopback".to_owned());
    let (mut forced, address) = spawn_forwarder(&forced_args, appliance.path().join("forced.log"));
    assert!(address.ip().is_unspecified(), "{address}");
    let log = forced.log_text();
    assert!(
        log.contains("WARNING") && log.contains("NOT a loopback address"),
        "{log}"
    );
    forced.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_reports_refused_certificate_untrusted_appliance_and_unreachable_appliance() {
    let (appliance, server, upstream) = vector_appliance();
    let certs = appliance.certs();
    let (pubkey, request, _) = aggregation_slot_vector();
    let path = sign_path(&pubkey);

    // A client certificate from another CA: the appliance refuses it in the handshake.
    let other = tempfile::tempdir().unwrap();
    certs_generate(other.path(), "stranger");
    let (refused, refused_address) = start_forwarder(
        upstream,
        &certs.join("ca.pem"),
        &other.path().join("stranger.pem"),
        &other.path().join("stranger.key"),
        appliance.path().join("refused.log"),
    );
    let mut stream = TcpStream::connect(refused_address).await.unwrap();
    let answer = exchange(&mut stream, "POST", &path, &SIGN_HEADERS, &request).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    let error = answer.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("refused this forwarder's client certificate")
            && error.contains("nothing was signed"),
        "{error}"
    );
    let log = refused.log_text();
    // Once at start-up (the probe) and once for the request.
    assert!(
        log.matches("cause=\"appliance refused the client certificate\"")
            .count()
            >= 2,
        "{log}"
    );
    assert!(std::fs::read_to_string(&server.log)
        .unwrap()
        .contains("TLS handshake refused"));

    // The appliance's server certificate from a CA the forwarder does not trust.
    let (untrusting, untrusting_address) = start_forwarder(
        upstream,
        &other.path().join("ca.pem"),
        &certs.join("client.pem"),
        &certs.join("client.key"),
        appliance.path().join("untrusting.log"),
    );
    let mut stream = TcpStream::connect(untrusting_address).await.unwrap();
    let answer = exchange(&mut stream, "GET", "/upcheck", &[], b"").await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(answer.json()["error"]
        .as_str()
        .unwrap()
        .contains("is not trusted"));
    assert!(untrusting
        .log_text()
        .contains("cause=\"appliance certificate not trusted\""));

    // Nothing listening upstream.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (unreachable, unreachable_address) = forwarder_for(&appliance, dead, "unreachable");
    let mut stream = TcpStream::connect(unreachable_address).await.unwrap();
    let answer = exchange(&mut stream, "POST", &path, &SIGN_HEADERS, &request).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    let error = answer.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("unreachable") && error.contains(&dead.to_string()),
        "{error}"
    );
    assert!(unreachable
        .log_text()
        .contains("cause=\"appliance unreachable\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_signs_honours_connection_close_and_reuses_upstream_connections() {
    let (appliance, server, upstream) = vector_appliance();
    let (pubkey, request, expected) = aggregation_slot_vector();
    let path = sign_path(&pubkey);
    let (forwarder, address) = forwarder_for(&appliance, upstream, "forwarder");

    // Lodestar's way: Accept */*, Connection: close → JSON, and the socket is closed after it.
    let mut stream = TcpStream::connect(address).await.unwrap();
    assert_signed_then_closed(&mut stream, &path, &request, &expected).await;

    // Keep-alive clients keep their connection: two requests on one socket.
    let mut stream = TcpStream::connect(address).await.unwrap();
    for _ in 0..2 {
        let answer = exchange(
            &mut stream,
            "GET",
            "/api/v1/eth2/publicKeys",
            &[("Accept", "application/json")],
            b"",
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json(), serde_json::json!([pubkey]));
        assert_eq!(answer.header("connection"), None);
    }
    assert!(
        !closed_by_peer(&mut stream).await,
        "keep-alive connection closed"
    );
    drop(stream);

    // Error answers from the appliance pass through unchanged (a malformed request: 400 JSON).
    let mut stream = TcpStream::connect(address).await.unwrap();
    let answer = exchange(&mut stream, "POST", &path, &SIGN_HEADERS, b"{\"type\":1}").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.json()["error"].is_string());

    // Twenty one-shot client connections in sequence ride on the pooled upstream connection:
    // the appliance saw a single TLS connection for all of the above.
    for _ in 0..20 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let answer = exchange(&mut stream, "POST", &path, &SIGN_HEADERS, &request).await;
        assert_eq!(answer.json()["signature"], expected);
    }
    let connections = || {
        strip_ansi(&std::fs::read_to_string(&server.log).unwrap())
            .matches("client connected")
            .count()
    };
    // (A few at most, not 24: a connection goes back to the pool just after its response is
    // delivered, so under load a request may occasionally find none idle.)
    let sequential = connections();
    assert!(
        sequential <= 4,
        "{sequential} upstream connections for 24 sequential requests: not reused"
    );

    // A burst like Lodestar's at the start of a slot: 50 fresh client connections at once, each
    // one request with Connection: close. Every one is answered with the right signature.
    let started = Instant::now();
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let (path, request) = (path.clone(), request.clone());
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(address).await.unwrap();
                exchange(&mut stream, "POST", &path, &SIGN_HEADERS, &request).await
            })
        })
        .collect();
    for handle in burst {
        let answer = handle.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json()["signature"], expected);
        assert_eq!(answer.header("connection"), Some("close"));
    }
    // Concurrent requests need their own upstream connections, but never more than the burst.
    assert!(
        connections() <= sequential + 50,
        "{} upstream connections",
        connections()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "burst took {:?}",
        started.elapsed()
    );
    assert!(!forwarder.log_text().contains("request not forwarded"));
}

// ------------------------------------------------------------------------------------------------
// The appliance itself, as Lodestar talks to it when no forwarder is needed (HTTPS + its CA).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_honours_connection_close_and_absorbs_a_burst_of_fresh_connections() {
    let (appliance, _server, address) = vector_appliance();
    let (pubkey, request, expected) = aggregation_slot_vector();
    let path = sign_path(&pubkey);

    let mut stream = tls_connect(&appliance, address).await;
    assert_signed_then_closed(&mut stream, &path, &request, &expected).await;

    let appliance = Arc::new(appliance);
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let (appliance, path, request) = (appliance.clone(), path.clone(), request.clone());
            tokio::spawn(async move {
                let mut stream = tls_connect(&appliance, address).await;
                let answer = exchange(&mut stream, "POST", &path, &SIGN_HEADERS, &request).await;
                let closed = closed_by_peer(&mut stream).await;
                (answer, closed)
            })
        })
        .collect();
    for handle in burst {
        let (answer, closed) = handle.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json()["signature"], expected);
        assert!(closed);
    }
}

// ------------------------------------------------------------------------------------------------
// PKCS#12 identities

#[test]
fn certs_generate_writes_pkcs12_identities_that_openssl_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    certs_generate_with(
        &out,
        &[
            "--client",
            "lighthouse",
            "--client",
            "teku",
            "--server-name",
            "signer.example",
            "--server-name",
            "192.0.2.7",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    for file in [
        "lighthouse.p12",
        "lighthouse.p12.pass",
        "teku.p12",
        "teku.p12.pass",
        "ca.p12",
        "ca.p12.pass",
    ] {
        let mode = std::fs::metadata(out.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&out)
            .output()
            .expect("openssl is installed by scripts/install-deps.sh");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    // The server certificate names the appliance as clients will address it.
    let (ok, sans) = openssl(&[
        "x509",
        "-in",
        "server.pem",
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok, "{sans}");
    assert!(
        sans.contains("DNS:signer.example") && sans.contains("IP Address:192.0.2.7"),
        "{sans}"
    );
    for client in ["lighthouse", "teku"] {
        let p12 = format!("{client}.p12");
        let pass = format!("file:{client}.p12.pass");
        let (ok, info) = openssl(&["pkcs12", "-info", "-noout", "-in", &p12, "-passin", &pass]);
        assert!(ok, "{info}");
        for expected in [
            "MAC: sha256",
            "PBES2, PBKDF2, AES-256-CBC",
            "Shrouded Keybag",
        ] {
            assert!(info.contains(expected), "{expected} missing:\n{info}");
        }
        let (ok, certs) = openssl(&["pkcs12", "-nokeys", "-in", &p12, "-passin", &pass]);
        assert!(ok, "{certs}");
        assert!(certs.contains(&format!("CN = {client}")), "{certs}");
        assert!(certs.contains("CN = KeyStake signer CA"), "{certs}");
        // The key inside is the one in <client>.key.
        let (ok, key_out) = openssl(&[
            "pkcs12", "-nocerts", "-nodes", "-in", &p12, "-passin", &pass,
        ]);
        assert!(ok);
        let from_p12 = public_key_of(&out, &key_out);
        let from_pem = public_key_of(
            &out,
            &std::fs::read_to_string(out.join(format!("{client}.key"))).unwrap(),
        );
        assert_eq!(from_p12, from_pem);
        // A wrong password is refused.
        let (ok, _) = openssl(&[
            "pkcs12",
            "-info",
            "-noout",
            "-in",
            &p12,
            "-passin",
            "pass:wrong",
        ]);
        assert!(!ok);
    }
    let (ok, info) = openssl(&[
        "pkcs12",
        "-info",
        "-nokeys",
        "-in",
        "ca.p12",
        "-passin",
        "file:ca.p12.pass",
    ]);
    assert!(ok, "{info}");
    assert!(
        info.contains("CN = KeyStake signer CA") && !info.contains("Shrouded Keybag"),
        "{info}"
    );
}

/// The public key (PEM) of a private key given as PEM text, through `openssl pkey`.
fn public_key_of(dir: &Path, private_pem: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubout"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private_pem.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

// ------------------------------------------------------------------------------------------------
// Lodestar devnet (../shared/interop/lodestar): ignored in a plain `cargo test`, run serially by
// scripts/test.sh (`-- --ignored --test-threads=1 interop::lodestar`).

/// The network Lodestar's dev chain runs (README of the harness): minimal preset, Altair from
/// genesis, Bellatrix at 1, Capella at 2.
const LODESTAR_DEVNET: &str = r#"name = "lodestar-devnet"
preset = "minimal"
genesis_fork_version = "0x00000001"

[forks]
altair    = { version = "0x01000001", epoch = 0 }
bellatrix = { version = "0x02000001", epoch = 1 }
capella   = { version = "0x03000001", epoch = 2 }
"#;

/// Every type the harness README lists as seen with `BUILDER=1`.
const LODESTAR_DUTIES: [&str; 9] = [
    "BLOCK_V2",
    "RANDAO_REVEAL",
    "ATTESTATION",
    "AGGREGATION_SLOT",
    "AGGREGATE_AND_PROOF",
    "SYNC_COMMITTEE_MESSAGE",
    "SYNC_COMMITTEE_SELECTION_PROOF",
    "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
    "VALIDATOR_REGISTRATION",
];

const LODESTAR_VALIDATORS: usize = 8;
const LODESTAR_TIMEOUT_S: u64 = 240;

/// One Lodestar run at a time: they share the npm cache directory.
static LODESTAR_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/interop/lodestar")
}

/// A devnet appliance: network file, the 8 interop keys imported with `keys import`.
fn lodestar_appliance() -> Appliance {
    let appliance = Appliance::create();
    std::fs::write(appliance.path().join("devnet.toml"), LODESTAR_DEVNET).unwrap();
    let config = std::fs::read_to_string(&appliance.config).unwrap();
    let config = config.replacen(
        "network = \"mainnet\"",
        "network = \"mainnet\"\nnetwork_config_file = \"devnet.toml\"",
        1,
    );
    assert!(config.contains("network_config_file"));
    std::fs::write(&appliance.config, config).unwrap();
    let keystores = harness_dir().join("keystores");
    for i in 0..LODESTAR_VALIDATORS {
        let out = appliance.import_keystore(
            &keystores.join(format!("interop-{i}.json")),
            &keystores.join(format!("interop-{i}.pass")),
        );
        assert!(out.contains("imported"), "{out}");
    }
    appliance
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `lodestar-e2e.sh` running against `signer`, its output in `log`.
struct LodestarRun {
    child: Child,
    log: PathBuf,
    bn_port: u16,
    started: Instant,
}

impl LodestarRun {
    fn start(signer: SocketAddr, log: PathBuf) -> LodestarRun {
        LodestarRun::start_with_slot_time(signer, log, 1)
    }

    /// As [`LodestarRun::start`] with `seconds_per_slot` (the threshold run signs every duty on
    /// four appliances and verifies partials: 2 s slots leave it headroom on two shared cores).
    fn start_with_slot_time(
        signer: SocketAddr,
        log: PathBuf,
        seconds_per_slot: u32,
    ) -> LodestarRun {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lodestar-e2e");
        let bn_port = free_port();
        let child = Command::new("bash")
            .arg(harness_dir().join("lodestar-e2e.sh"))
            .env("SIGNER_URL", format!("http://{signer}"))
            .env("BUILDER", "1")
            .env("FINALIZED_EPOCHS", "3")
            .env("SECONDS_PER_SLOT", seconds_per_slot.to_string())
            .env("VALIDATORS", LODESTAR_VALIDATORS.to_string())
            .env("TIMEOUT_S", LODESTAR_TIMEOUT_S.to_string())
            .env("WORK", &work)
            .env("BN_PORT", bn_port.to_string())
            .env("P2P_PORT", free_port().to_string())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        LodestarRun {
            child,
            log,
            bn_port,
            started: Instant::now(),
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
            + &std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
    }

    /// Whether the script has already ended.
    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// The beacon node's head slot, if it answers.
    fn head_slot(&self) -> Option<u64> {
        let output = Command::new("curl")
            .args(["-fsS", "--max-time", "2"])
            .arg(format!(
                "http://127.0.0.1:{}/eth/v1/beacon/headers/head",
                self.bn_port
            ))
            .output()
            .ok()?;
        let value: Value = serde_json::from_slice(&output.stdout).ok()?;
        value["data"]["header"]["message"]["slot"]
            .as_str()?
            .parse()
            .ok()
    }

    /// SIGTERM, which lets the script stop Lodestar (its trap); after `grace`, SIGKILL to make
    /// sure.
    fn stop(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        std::thread::sleep(grace);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the script to finish (it bounds itself by TIMEOUT_S after npm ci; this adds a
    /// margin for the install) and panic with its output unless it passed.
    fn finish(mut self) -> String {
        let deadline = Duration::from_secs(LODESTAR_TIMEOUT_S + 420);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let output = self.output();
                assert!(
                    status.success(),
                    "lodestar-e2e.sh failed ({status}):\n{output}"
                );
                assert!(output.contains("PASS: finalized_epoch="), "{output}");
                return output;
            }
            if self.started.elapsed() > deadline {
                self.stop(Duration::from_secs(20));
                panic!(
                    "lodestar-e2e.sh did not finish in {deadline:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for LodestarRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop(Duration::from_secs(10));
        }
    }
}

/// The signature kinds an appliance log records (`signed … kind=…` lines).
fn signed_kinds(logs: &[String]) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for line in logs.iter().flat_map(|log| log.lines()) {
        if !line.contains(" signed ") {
            continue;
        }
        if let Some(rest) = line.split(" kind=").nth(1) {
            let kind = rest
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_owned();
            *kinds.entry(kind).or_insert(0) += 1;
        }
    }
    kinds
}

/// SQLite stores u64 with the top bit flipped (order-preserving, see `store.rs`).
fn u64_from_sql(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

/// Slashing history per validator, read straight from the appliance's database.
#[derive(Default, Debug)]
struct History {
    blocks: Vec<(u64, Option<Vec<u8>>)>,
    attestations: Vec<(u64, u64, Option<Vec<u8>>)>,
}

fn read_histories(appliance: &Appliance) -> BTreeMap<String, History> {
    let db = rusqlite::Connection::open_with_flags(
        appliance.path().join("data/signer.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut histories: BTreeMap<String, History> = BTreeMap::new();
    let mut keys = db.prepare("SELECT id, pubkey FROM validators").unwrap();
    let ids: Vec<(i64, Vec<u8>)> = keys
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, pubkey) in ids {
        let mut history = History::default();
        let mut blocks = db
            .prepare("SELECT slot, signing_root FROM signed_blocks WHERE validator_id = ?1")
            .unwrap();
        history.blocks = blocks
            .query_map([id], |r| Ok((u64_from_sql(r.get(0)?), r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut attestations = db
            .prepare(
                "SELECT source_epoch, target_epoch, signing_root FROM signed_attestations
                 WHERE validator_id = ?1",
            )
            .unwrap();
        history.attestations = attestations
            .query_map([id], |r| {
                Ok((u64_from_sql(r.get(0)?), u64_from_sql(r.get(1)?), r.get(2)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        histories.insert(format!("0x{}", hex::encode(pubkey)), history);
    }
    histories
}

/// Independent of the appliance's own rules: every pair of records checked against EIP-3076's
/// slashing conditions (double proposal, double vote, surround either way).
fn assert_nothing_slashable(histories: &BTreeMap<String, History>) {
    for (key, history) in histories {
        for (i, a) in history.blocks.iter().enumerate() {
            for b in &history.blocks[i + 1..] {
                assert!(
                    !(a.0 == b.0 && a.1 != b.1),
                    "{key}: two different blocks at slot {}",
                    a.0
                );
            }
        }
        for (i, a) in history.attestations.iter().enumerate() {
            assert!(a.0 <= a.1, "{key}: source {} after target {}", a.0, a.1);
            for b in &history.attestations[i + 1..] {
                assert!(
                    !(a.1 == b.1 && a.2 != b.2),
                    "{key}: double vote for target {}",
                    a.1
                );
                let surrounds = |x: &(u64, u64, Option<Vec<u8>>),
                                 y: &(u64, u64, Option<Vec<u8>>)| {
                    x.0 < y.0 && y.1 < x.1
                };
                assert!(
                    !surrounds(a, b) && !surrounds(b, a),
                    "{key}: surround vote ({}, {}) / ({}, {})",
                    a.0,
                    a.1,
                    b.0,
                    b.1
                );
            }
        }
    }
}

/// Every interop key has slashing history (attestations; at least one block overall).
fn assert_history_for_every_validator(histories: &BTreeMap<String, History>) {
    assert_eq!(histories.len(), LODESTAR_VALIDATORS, "{histories:?}");
    for (key, history) in histories {
        assert!(
            !history.attestations.is_empty(),
            "{key} has no attestation history"
        );
    }
    let blocks: usize = histories.values().map(|h| h.blocks.len()).sum();
    assert!(blocks > 0, "no block was signed");
}

#[test]
#[ignore = "runs a Lodestar devnet (node, ~1 min); scripts/test.sh runs it"]
fn lodestar_devnet_finalizes_with_every_duty_signed_by_the_appliance() {
    let _serial = LODESTAR_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let appliance = lodestar_appliance();
    let (server, upstream) = start_appliance(
        &appliance,
        "127.0.0.1:0",
        appliance.path().join("serve.log"),
    );
    let (forwarder, signer) = forwarder_for(&appliance, upstream, "forwarder");

    let run = LodestarRun::start(signer, appliance.path().join("lodestar-e2e.log"));
    let output = run.finish();
    println!("{}", output.lines().last().unwrap_or_default());

    let kinds = signed_kinds(&[server.log_text()]);
    for duty in LODESTAR_DUTIES {
        assert!(
            kinds.contains_key(duty),
            "{duty} never signed; signed: {kinds:?}"
        );
    }
    let histories = read_histories(&appliance);
    assert_history_for_every_validator(&histories);
    assert_nothing_slashable(&histories);
    assert!(
        !forwarder.log_text().contains("request not forwarded"),
        "{}",
        forwarder.log_text()
    );
}

#[test]
#[ignore = "runs a Lodestar devnet (node, ~1 min); scripts/test.sh runs it"]
fn lodestar_devnet_finalizes_across_an_appliance_restart_without_slashable_signatures() {
    let _serial = LODESTAR_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let appliance = lodestar_appliance();
    let (mut first, upstream) = start_appliance(
        &appliance,
        "127.0.0.1:0",
        appliance.path().join("serve-1.log"),
    );
    let (forwarder, signer) = forwarder_for(&appliance, upstream, "forwarder");
    let mut run = LodestarRun::start(signer, appliance.path().join("lodestar-e2e.log"));

    // Mid-chain (Bellatrix, past the first epoch's duties): SIGKILL, two slots of downtime, then
    // the same binary on the same port and database.
    let deadline = Instant::now() + Duration::from_secs(LODESTAR_TIMEOUT_S + 300);
    loop {
        if run.head_slot().is_some_and(|slot| slot >= 12) {
            break;
        }
        assert!(
            !run.exited(),
            "lodestar-e2e.sh ended before slot 12:\n{}",
            run.output()
        );
        assert!(
            Instant::now() < deadline,
            "chain never reached slot 12:\n{}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let before = read_histories(&appliance);
    first.kill();
    std::thread::sleep(Duration::from_secs(2));
    let (second, restarted) = start_appliance(
        &appliance,
        &upstream.to_string(),
        appliance.path().join("serve-2.log"),
    );
    assert_eq!(restarted, upstream);

    let output = run.finish();
    println!("{}", output.lines().last().unwrap_or_default());

    // Lodestar's requests hit the dead appliance and were answered 503 by the forwarder.
    assert!(
        forwarder
            .log_text()
            .contains("cause=\"appliance unreachable\""),
        "the restart went unnoticed:\n{}",
        forwarder.log_text()
    );
    // The restarted appliance signed (it had the first one's history under it).
    let kinds = signed_kinds(&[second.log_text()]);
    assert!(
        kinds.get("ATTESTATION").is_some_and(|n| *n > 0),
        "{kinds:?}"
    );
    let after = read_histories(&appliance);
    for (key, old) in &before {
        let new = &after[key];
        assert!(
            new.attestations.len() > old.attestations.len(),
            "{key}: no attestation after restart"
        );
        assert!(
            new.attestations.len() >= old.attestations.len()
                && new.blocks.len() >= old.blocks.len()
        );
    }
    assert_history_for_every_validator(&after);
    assert_nothing_slashable(&after);
}

// ------------------------------------------------------------------------------------------------
// Lodestar devnet through the threshold forwarder (issue 18): every interop key split 3-of-4.

/// A devnet appliance without keys (the network file as in [`lodestar_appliance`]).
fn lodestar_share_appliance() -> Appliance {
    let appliance = Appliance::create();
    std::fs::write(appliance.path().join("devnet.toml"), LODESTAR_DEVNET).unwrap();
    let config = std::fs::read_to_string(&appliance.config).unwrap();
    let config = config.replacen(
        "network = \"mainnet\"",
        "network = \"mainnet\"\nnetwork_config_file = \"devnet.toml\"",
        1,
    );
    std::fs::write(&appliance.config, config).unwrap();
    appliance
}

#[test]
#[ignore = "runs a Lodestar devnet (node, ~2 min); scripts/test.sh runs it"]
fn lodestar_devnet_finalizes_through_the_threshold_forwarder_with_one_appliance_down() {
    let _serial = LODESTAR_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let appliances: Vec<Appliance> = (0..4).map(|_| lodestar_share_appliance()).collect();
    let dealer = tempfile::tempdir().unwrap();
    let dir = dealer.path();
    let mut enrolment_args = Vec::new();
    for (i, appliance) in appliances.iter().enumerate() {
        let file = dir.join(format!("appliance-{}.pub", i + 1));
        std::fs::write(&file, appliance.cli_ok(&["enrolment", "show"], &[])).unwrap();
        enrolment_args.extend(["--enrolment-key".to_owned(), file.display().to_string()]);
    }
    // Each interop key split 3-of-4; share i goes to appliance i.
    let keystores = harness_dir().join("keystores");
    let mut manifests = Vec::new();
    for key in 0..LODESTAR_VALIDATORS {
        let out = dir.join(format!("split-{key}"));
        let mut args = vec![
            "split".to_owned(),
            "--keystore".into(),
            keystores
                .join(format!("interop-{key}.json"))
                .display()
                .to_string(),
            "--password-file".into(),
            keystores
                .join(format!("interop-{key}.pass"))
                .display()
                .to_string(),
            "--threshold".into(),
            "3".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        args.extend(enrolment_args.iter().cloned());
        run_ok(&args);
        let manifest = out.join("manifest.json");
        for (i, appliance) in appliances.iter().enumerate() {
            let package = out.join(format!("share-{}.pkg", i + 1));
            appliance.cli_ok(
                &["keys", "import-share"],
                &[
                    "--package",
                    package.to_str().unwrap(),
                    "--manifest",
                    manifest.to_str().unwrap(),
                ],
            );
        }
        manifests.push(manifest);
    }
    let mut servers: Vec<(Process, SocketAddr)> = appliances
        .iter()
        .enumerate()
        .map(|(i, appliance)| {
            start_appliance(
                appliance,
                "127.0.0.1:0",
                appliance.path().join(format!("serve-{}.log", i + 1)),
            )
        })
        .collect();

    // The cluster file: the eight manifests, the devnet, one entry per appliance (own CA each).
    std::fs::write(dir.join("devnet.toml"), LODESTAR_DEVNET).unwrap();
    let mut cluster = format!(
        "manifests = {:?}\nnetwork_config_file = \"devnet.toml\"\n",
        manifests
            .iter()
            .map(|m| m.display().to_string())
            .collect::<Vec<_>>()
    );
    for (i, (appliance, (_, address))) in appliances.iter().zip(&servers).enumerate() {
        let certs = appliance.certs();
        cluster += &format!(
            "\n[[appliance]]\nindex = {}\nurl = \"https://{address}\"\nca = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
            i + 1,
            certs.join("ca.pem").display().to_string(),
            certs.join("client.pem").display().to_string(),
            certs.join("client.key").display().to_string(),
        );
    }
    let cluster_path = dir.join("cluster.toml");
    std::fs::write(&cluster_path, cluster).unwrap();
    let mut command = Command::new(BIN);
    command.args([
        "connect",
        "--cluster",
        cluster_path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--timeout-secs",
        "2",
    ]);
    let (forwarder, rest) = Process::spawn(
        command,
        dir.join("forwarder.log"),
        "info",
        "forwarding on http://",
    );
    let signer: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();

    let mut run = LodestarRun::start_with_slot_time(signer, dir.join("lodestar-e2e.log"), 2);
    // Mid-chain (past the first epoch's duties): appliance 4 is SIGKILLed and stays down.
    let deadline = Instant::now() + Duration::from_secs(LODESTAR_TIMEOUT_S + 300);
    loop {
        if run.head_slot().is_some_and(|slot| slot >= 12) {
            break;
        }
        assert!(
            !run.exited(),
            "lodestar-e2e.sh ended before slot 12:\n{}\n{}",
            run.output(),
            forwarder.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "chain never reached slot 12:\n{}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    servers[3].0.kill();
    let output = run.finish();
    println!("{}", output.lines().last().unwrap_or_default());

    let log = forwarder.log_text();
    assert!(
        log.contains("appliance unreachable") && log.contains("appliance=4"),
        "the dead appliance went unnoticed:\n{log}"
    );
    assert!(
        !log.contains("no signature"),
        "a duty was not signed:\n{log}"
    );
    // The three survivors signed every kind of duty; nothing slashable anywhere.
    let logs: Vec<String> = servers[..3].iter().map(|(p, _)| p.log_text()).collect();
    let kinds = signed_kinds(&logs);
    for duty in LODESTAR_DUTIES {
        assert!(
            kinds.contains_key(duty),
            "{duty} never signed; signed: {kinds:?}"
        );
    }
    // Every survivor holds history for every validator; the killed one whatever it signed before
    // the kill (a validator whose first duty came later has none there). No database, the
    // killed one's included, holds a slashable pair.
    for (i, appliance) in appliances.iter().enumerate() {
        let histories = read_histories(appliance);
        if i < 3 {
            assert_history_for_every_validator(&histories);
        } else {
            let attestations: usize = histories.values().map(|h| h.attestations.len()).sum();
            assert!(
                attestations > 0,
                "the killed appliance signed nothing before the kill"
            );
        }
        assert_nothing_slashable(&histories);
    }
    drop(servers);
}
