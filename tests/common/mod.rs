//! Shared harness for the integration tests: vector loading, appliance directories built with the
//! real CLI (SoftHSM2 token, rcgen certificates, SQLite), the real binary spawned on
//! 127.0.0.1:0, and a mutual-TLS client.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keystake_core::bls::SecretKey;
use keystake_core::keystore::{self, KdfChoice};
use keystake_core::slashing::interchange::Interchange;
use keystake_signer::net::client::{ClientError, MtlsClient};
use keystake_signer::net::tls;
use secrecy::SecretString;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_keystake-signer");

pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
}

/// Every JSON file of a vector folder, sorted by name, with the file stem.
pub fn vector_files(folder: &str) -> Vec<(String, Value)> {
    let dir = vectors_dir().join(folder);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    entries
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect()
}

/// The case `web3signer/<name>.json` of the vector set.
pub fn vector_case(name: &str) -> Value {
    let path = vectors_dir()
        .join("web3signer")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no vector {name} ({}): {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The three secret keys of `web3signer.keys.json`, as hex.
pub fn vector_secret_keys() -> Vec<String> {
    let text = std::fs::read_to_string(vectors_dir().join("web3signer.keys.json")).unwrap();
    let keys: Value = serde_json::from_str(&text).unwrap();
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["secret_key"].as_str().unwrap().to_owned())
        .collect()
}

pub fn secret_key_from_hex(hex_text: &str) -> SecretKey {
    SecretKey::from_bytes(&hex::decode(hex_text.trim_start_matches("0x")).unwrap()).unwrap()
}

/// An appliance data directory prepared with the real binary.
pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Appliance {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn certs(&self) -> PathBuf {
        self.path().join("certs")
    }

    /// signer.toml + `init` + `certs generate --config` (the server certificate issued to the
    /// TLS key `init` generated in the HSM) + `init` again (the first policy, naming the client
    /// certificate).
    pub fn create() -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("signer.toml");
        std::fs::write(
            &config,
            keystake_signer::config::example(dir.path(), "127.0.0.1:0".parse().unwrap()),
        )
        .unwrap();
        // `serve` refuses a configuration other users may read.
        std::fs::set_permissions(
            &config,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .unwrap();
        run_ok(&["init", "--config", config.to_str().unwrap()]);
        certs_generate_with(
            &dir.path().join("certs"),
            &["--client", "client", "--config", config.to_str().unwrap()],
        );
        // Again, now that the client certificate exists: `init` writes the first policy.
        run_ok(&["init", "--config", config.to_str().unwrap()]);
        Appliance { dir, config }
    }

    /// Write a cheap PBKDF2 keystore for `secret` and import it with `keys import`.
    pub fn import_secret(&self, secret: &SecretKey, name: &str) -> String {
        let (ks_path, pw_path) = write_keystore(self.path(), name, secret, "test password ✓");
        let out = self.import_keystore(&ks_path, &pw_path);
        // Keystores are test fixtures; remove them so the leak scan sees only the appliance.
        std::fs::remove_file(&ks_path).unwrap();
        std::fs::remove_file(&pw_path).unwrap();
        out
    }

    /// `keys import` of a keystore file with its password file; returns stdout.
    pub fn import_keystore(&self, keystore: &Path, password_file: &Path) -> String {
        self.cli_ok(
            &["keys", "import"],
            &[
                "--keystore",
                keystore.to_str().unwrap(),
                "--password-file",
                password_file.to_str().unwrap(),
            ],
        )
    }

    /// Import key `index` of `web3signer.keys.json` with `keys import`; returns its public key
    /// as the command printed it.
    pub fn import_vector_key(&self, index: usize) -> String {
        let secret = secret_key_from_hex(&vector_secret_keys()[index]);
        let out = self.import_secret(&secret, &format!("vector-key{index}"));
        out.split_whitespace().next().unwrap().to_owned()
    }

    /// `keystake-signer <command…> --config <this appliance> <args…>`: (success, stdout, stderr).
    pub fn cli(&self, command: &[&str], args: &[&str]) -> (bool, String, String) {
        run_with_config(&self.config, command, args)
    }

    /// `keystake-signer <command…> --config <this appliance> <args…>`; panics with its output
    /// unless it succeeds. Returns stdout.
    pub fn cli_ok(&self, command: &[&str], args: &[&str]) -> String {
        run_ok_with_config(&self.config, command, args)
    }

    /// `slashing export` (with `extra` arguments) to a file in the appliance directory, read
    /// back.
    pub fn export_slashing(&self, extra: &[&str]) -> Interchange {
        let out = self.path().join("export.json");
        let mut args = vec!["--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.cli_ok(&["slashing", "export"], &args);
        Interchange::from_json(&std::fs::read_to_string(out).unwrap()).unwrap()
    }

    /// Start `serve` for this appliance, with a client presenting the `client` identity.
    pub fn serve(&self) -> (Server, MtlsClient) {
        let server = Server::start(self);
        let client = server.client(self.client_config("client"));
        (server, client)
    }

    pub fn client_config(&self, client: &str) -> Arc<rustls::ClientConfig> {
        let certs = self.certs();
        identity_config(&certs.join("ca.pem"), &certs, client)
    }
}

/// Run the binary to completion; panic with its output unless it succeeds. Returns stdout.
pub fn run_ok<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .env("KEYSTAKE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "keystake-signer {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Run the binary to completion and return (success, stdout, stderr).
pub fn run<S: AsRef<OsStr>>(args: &[S]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("KEYSTAKE_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `<command…> --config <config> <args…>`.
fn with_config<'a>(config: &'a Path, command: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    let mut all = command.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    all.extend_from_slice(args);
    all
}

/// `keystake-signer <command…> --config <config> <args…>`: (success, stdout, stderr).
pub fn run_with_config(config: &Path, command: &[&str], args: &[&str]) -> (bool, String, String) {
    run(&with_config(config, command, args))
}

/// `keystake-signer <command…> --config <config> <args…>`; panics with its output unless it
/// succeeds. Returns stdout.
pub fn run_ok_with_config(config: &Path, command: &[&str], args: &[&str]) -> String {
    run_ok(&with_config(config, command, args))
}

/// A mutual-TLS client trusting `ca` and presenting `<dir>/<client>.pem` with its key.
pub fn identity_config(ca: &Path, dir: &Path, client: &str) -> Arc<rustls::ClientConfig> {
    tls::client_config(
        ca,
        &dir.join(format!("{client}.pem")),
        &dir.join(format!("{client}.key")),
    )
    .unwrap()
}

/// `certs generate --out <out> --client <client>`: a new CA with one client identity.
pub fn certs_generate(out: &Path, client: &str) -> String {
    certs_generate_with(out, &["--client", client])
}

/// `certs generate --out <out>` followed by `args` (clients, server names).
pub fn certs_generate_with(out: &Path, args: &[&str]) -> String {
    let mut command = vec!["certs", "generate", "--out", out.to_str().unwrap()];
    command.extend_from_slice(args);
    run_ok(&command)
}

/// A cheap (PBKDF2) keystore for `secret` and its password file, written to `dir` as
/// `<name>.keystore.json` and `<name>.pass`.
pub fn write_keystore(
    dir: &Path,
    name: &str,
    secret: &SecretKey,
    password: &str,
) -> (PathBuf, PathBuf) {
    let keystore_path = dir.join(format!("{name}.keystore.json"));
    let password_path = dir.join(format!("{name}.pass"));
    let keystore = keystore_json(secret, password, KdfChoice::Pbkdf2 { c: 16 });
    std::fs::write(&keystore_path, keystore).unwrap();
    std::fs::write(&password_path, format!("{password}\n")).unwrap();
    (keystore_path, password_path)
}

/// `keystake-signer serve --config <appliance's config> --listen <listen>`, to be spawned.
pub fn serve_command(appliance: &Appliance, listen: &str) -> Command {
    let mut command = Command::new(BIN);
    command.args([
        "serve",
        "--config",
        appliance.config.to_str().unwrap(),
        "--listen",
        listen,
    ]);
    command
}

/// A child's stdout, line by line, read on a thread that drains it to the end (so the child
/// never blocks on a full pipe).
pub struct StdoutLines {
    receiver: Receiver<String>,
    seen: Vec<String>,
}

impl StdoutLines {
    /// Take the (piped) stdout of `child`.
    pub fn of(child: &mut Child) -> StdoutLines {
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = sender.send(line);
            }
        });
        StdoutLines {
            receiver,
            seen: Vec::new(),
        }
    }

    /// The rest of the first line starting with `prefix` (one read before, or one arriving
    /// within `timeout`); `None` when none came in time or stdout closed.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let found = |line: &String| line.strip_prefix(prefix).map(str::to_owned);
        if let Some(rest) = self.seen.iter().find_map(found) {
            return Some(rest);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.receiver.recv_timeout(left).ok()?;
            let rest = found(&line);
            self.seen.push(line);
            if rest.is_some() {
                return rest;
            }
        }
    }
}

/// A running `keystake-signer serve` on 127.0.0.1:0, killed on drop. Its log goes to a file.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
    pub stdout: StdoutLines,
}

impl Server {
    pub fn start(appliance: &Appliance) -> Server {
        Server::start_with(appliance, &[])
    }

    /// `serve` with `extra` arguments, once it prints the address it listens on.
    pub fn start_with(appliance: &Appliance, extra: &[&str]) -> Server {
        let log = appliance.path().join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = serve_command(appliance, "127.0.0.1:0")
            .args(extra)
            .env("KEYSTAKE_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut stdout = StdoutLines::of(&mut child);
        let Some(url) = stdout.wait_for("listening on ", Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!(
                "server did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Server {
            child,
            url,
            log,
            stdout,
        }
    }

    pub fn client(&self, config: Arc<rustls::ClientConfig>) -> MtlsClient {
        MtlsClient::new(config, &self.url).unwrap()
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// For a failure message: whether the process is still running (a dead child stays a zombie
    /// until waited for, so its state shows here) and the last `lines` lines of its own log.
    pub fn report(&self, lines: usize) -> String {
        let pid = self.child.id();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after_name = stat.rsplit_once(") ")?.1.to_owned();
                after_name.split(' ').next().map(str::to_owned)
            })
            .unwrap_or_else(|| "gone".into());
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        // The HTTP/2 and TLS crates' frame-by-frame debug lines are left out.
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .filter(|line| !line.contains(" h2::") && !line.contains(" rustls::"))
            .take(lines)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "serve {} (pid {pid}, state {state}; Z = died), last {lines} log lines:\n{}",
            self.url,
            tail.join("\n")
        )
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send `signal` (`-STOP`, `-CONT`, …) to `child` with kill(1): a deterministic pause of one
/// process where a test needs an order of events.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {}", child.id());
}

/// Mainnet's genesis validators root, which the requests built here carry.
pub const MAINNET_GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";

/// The headers of a JSON request that wants a JSON answer.
pub const JSON_HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("accept", "application/json"),
];

/// The REST signing path of a key (public key or group key).
pub fn sign_path(identifier: &str) -> String {
    format!("/api/v1/eth2/sign/{identifier}")
}

/// A response body as JSON, or as a JSON string when it is not JSON.
fn json_or_text(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Send `body` as-is (not re-serialised) with the given headers; returns (status, body as JSON
/// or text), or the client's error (no connection, refused handshake).
pub async fn try_request(
    client: &MtlsClient,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(u16, Value), ClientError> {
    let response = client.request(method, path, headers, body).await?;
    Ok((response.status, json_or_text(&response.body)))
}

/// POST `body` as JSON to `path`, accepting JSON; (status, body as JSON or text), or the
/// client's error.
pub async fn try_post(
    client: &MtlsClient,
    path: &str,
    body: &Value,
) -> Result<(u16, Value), ClientError> {
    let bytes = serde_json::to_vec(body).unwrap();
    try_request(client, http::Method::POST, path, JSON_HEADERS, Some(bytes)).await
}

/// POST `body` as JSON to `path`; returns (status, body as JSON or text).
pub async fn post(client: &MtlsClient, path: &str, body: &Value) -> (u16, Value) {
    try_post(client, path, body).await.unwrap()
}

/// POST a sign request; returns (status, body as JSON or text).
pub async fn sign(client: &MtlsClient, identifier: &str, body: &Value) -> (u16, Value) {
    post(client, &sign_path(identifier), body).await
}

/// POST a sign request accepting only `text/plain`; returns (status, body as text).
pub async fn sign_as_text(client: &MtlsClient, identifier: &str, body: &Value) -> (u16, String) {
    let response = client
        .request(
            http::Method::POST,
            &sign_path(identifier),
            &[
                ("content-type", "application/json"),
                ("accept", "text/plain"),
            ],
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
        .unwrap();
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

/// GET `path`; returns (status, body as JSON or text).
pub async fn get(client: &MtlsClient, path: &str) -> (u16, Value) {
    request_raw(client, http::Method::GET, path, &[], None).await
}

/// The keys the signing API lists (`/api/v1/eth2/publicKeys`).
pub async fn public_keys(client: &MtlsClient) -> Vec<String> {
    let (status, body) = get(client, "/api/v1/eth2/publicKeys").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

/// The string `field` of each item of the JSON array `items`.
pub fn field_of_each<'a>(items: &'a Value, field: &str) -> Vec<&'a str> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap())
        .collect()
}

/// Run a future to completion from synchronous code (a `wait_until` condition) inside a
/// multi-thread runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// Wait until `f` is true or the deadline passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Send `body` as-is (not re-serialised) with the given headers; returns (status, body as JSON
/// or text).
pub async fn request_raw(
    client: &MtlsClient,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    try_request(client, method, path, headers, body)
        .await
        .unwrap()
}

impl Appliance {
    /// An appliance holding the three keys of `web3signer.keys.json` (imported with the CLI).
    pub fn with_vector_keys() -> Appliance {
        let appliance = Appliance::create();
        for index in 0..vector_secret_keys().len() {
            appliance.import_vector_key(index);
        }
        appliance
    }

    /// The keymanager API bearer token `init` generated.
    pub fn keymanager_token(&self) -> String {
        let config = keystake_signer::config::Config::load(&self.config).unwrap();
        std::fs::read_to_string(config.keymanager_token_path())
            .unwrap()
            .trim()
            .to_owned()
    }
}

/// An EIP-2335 keystore for `secret` as JSON text (what the keymanager API carries).
pub fn keystore_json(secret: &SecretKey, password: &str, kdf: KdfChoice) -> String {
    let keystore = keystore::encrypt(
        secret,
        &SecretString::from(password.to_owned()),
        kdf,
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    serde_json::to_string(&keystore).unwrap()
}

/// A keymanager API call (`/eth/v1/keystores`) with an optional bearer token.
pub async fn keymanager(
    client: &MtlsClient,
    method: http::Method,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ];
    if let Some(value) = &authorization {
        headers.push(("authorization", value.as_str()));
    }
    request_raw(
        client,
        method,
        "/eth/v1/keystores",
        &headers,
        body.map(|b| serde_json::to_vec(b).unwrap()),
    )
    .await
}

/// A mainnet ATTESTATION request for `source → target`; `block_root_byte` varies the signing
/// root (same epochs, different byte = a double vote).
pub fn attestation(source: u64, target: u64, block_root_byte: u8) -> Value {
    json!({
        "type": "ATTESTATION",
        "fork_info": {
            "fork": {"previous_version": "0x05000000", "current_version": "0x06000000", "epoch": "411392"},
            "genesis_validators_root": MAINNET_GVR
        },
        "attestation": {
            "slot": (target * 32).to_string(),
            "index": "0",
            "beacon_block_root": format!("0x{}", hex::encode([block_root_byte; 32])),
            "source": {"epoch": source.to_string(), "root": format!("0x{}", "11".repeat(32))},
            "target": {"epoch": target.to_string(), "root": format!("0x{}", "22".repeat(32))}
        }
    })
}
