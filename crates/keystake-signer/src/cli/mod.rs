//! What each `keystake-signer` subcommand does, as library functions (the binary only parses
//! arguments). Every command is non-interactive: secrets come from files named in the
//! configuration or on the command line, never from arguments or prompts.
#![forbid(unsafe_code)]

pub mod admin;
pub mod slashing;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rand::RngCore;
use secrecy::SecretString;

use crate::config::{self, Config};
use crate::hsm::pkcs11::{Pkcs11Config, Pkcs11Sealer};
use crate::hsm::Sealer;
use crate::net::pki as certs;
use crate::service;
use crate::store::{InsertOutcome, ShareOrigin};
use keystake_core::consensus::Network;
use keystake_core::types::BlsPublicKey;
use keystake_core::{bls, keystore};

pub mod threshold;

/// Make this process refuse to write core dumps and to be inspected by other processes of the
/// same user: a dump or a `/proc/<pid>/mem` read taken while a share is unsealed would expose
/// it. `RLIMIT_CORE=0` alone is ignored by pipe `core_pattern` handlers, hence also
/// `PR_SET_DUMPABLE=0` (which also refuses same-uid ptrace). Fails when either cannot be set:
/// commands that handle secrets must not run without it.
pub fn disable_core_dumps() -> Result<()> {
    rlimit::setrlimit(rlimit::Resource::CORE, 0, 0).context("setting RLIMIT_CORE to 0")?;
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("setting PR_SET_DUMPABLE to 0")?;
    Ok(())
}

/// Point SoftHSM2 at the configured token directory. Must run before any thread is started
/// (the environment is process-wide) and before the PKCS#11 module is loaded.
pub fn prepare_hsm_environment(config: &Config) {
    if let Some(conf) = &config.hsm.softhsm2_conf {
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
}

fn pkcs11_config(config: &Config) -> Pkcs11Config {
    Pkcs11Config {
        module: config.hsm.module.clone(),
        token_label: config.hsm.token_label.clone(),
        key_label: config.hsm.key_label.clone(),
        sessions: config
            .hsm
            .sessions
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    }
}

/// Open the HSM sealer named by the configuration.
pub fn open_sealer(config: &Config) -> Result<Arc<dyn Sealer>> {
    let pin = config::read_secret_file(&config.hsm.user_pin_file)?;
    let sealer = Pkcs11Sealer::open(&pkcs11_config(config), &pin)
        .with_context(|| format!("opening HSM token {:?}", config.hsm.token_label))?;
    Ok(Arc::new(sealer))
}

/// The network the configuration selects.
pub fn network(config: &Config) -> Result<Network> {
    if let Some(file) = &config.network_config_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading network config {}", file.display()))?;
        return Network::from_toml_str(&text)
            .with_context(|| format!("network config {}", file.display()));
    }
    Network::by_name(&config.network).with_context(|| {
        format!(
            "unknown network {:?} (mainnet, hoodi, sepolia, or set network_config_file)",
            config.network
        )
    })
}

/// Write a random secret (hex of 16 random bytes) to `path` with mode 0600, unless it exists.
fn ensure_secret_file(path: &Path) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    let mut bytes = zeroize::Zeroizing::new([0u8; 16]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let text = zeroize::Zeroizing::new(hex::encode(bytes.as_slice()));
    write_private(path, text.as_bytes())?;
    Ok(true)
}

/// Create a directory (and missing parents) accessible only by its owner. An existing directory
/// is left as it is.
pub fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating directory {}", path.display()))
}

/// Create a file readable only by its owner (mode set at creation, not after).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// `init`: data directory, SQLite store, HSM token, sealing key and enrolment key pair.
/// Idempotent.
pub fn init(config: &Config) -> Result<()> {
    create_private_dir(&config.data_dir)?;
    if let Some(conf) = &config.hsm.softhsm2_conf {
        if !conf.exists() {
            let dir = conf
                .parent()
                .context("softhsm2_conf has no parent directory")?;
            std::fs::create_dir_all(dir)?;
            crate::hsm::pkcs11::write_softhsm2_conf(dir)
                .with_context(|| format!("writing {}", conf.display()))?;
        }
    }
    let so_pin_file = config
        .hsm
        .so_pin_file
        .as_ref()
        .context("init needs hsm.so_pin_file (to initialise the token)")?;
    for file in [so_pin_file, &config.hsm.user_pin_file] {
        if ensure_secret_file(file)? {
            tracing::info!(file = %file.display(), "generated a new random PIN");
        }
    }
    let so_pin = config::read_secret_file(so_pin_file)?;
    let user_pin = config::read_secret_file(&config.hsm.user_pin_file)?;
    Pkcs11Sealer::initialize(&pkcs11_config(config), &so_pin, &user_pin)
        .context("initialising the HSM token and sealing key")?;
    // The key share packages of a trusted split are encrypted to (docs/threshold.md).
    crate::hsm::enrolment::ensure_key_pair(&pkcs11_config(config), &user_pin)
        .context("creating the enrolment key pair in the HSM")?;
    let store = slashing::open_store(config)?;
    let token_file = config.keymanager_token_path();
    if crate::service::keymanager::ensure_token_file(&token_file)? {
        tracing::info!(file = %token_file.display(), "generated the keymanager API token");
    }
    tracing::info!(database = %store.path().display(), token = %config.hsm.token_label, "initialised");
    Ok(())
}

/// `keys import`: decrypt an EIP-2335 keystore, seal the key in the HSM, store the sealed blob.
pub fn import_keystore(
    config: &Config,
    keystore_file: &Path,
    password_file: &Path,
) -> Result<(BlsPublicKey, InsertOutcome)> {
    let text = std::fs::read_to_string(keystore_file)
        .with_context(|| format!("reading keystore {}", keystore_file.display()))?;
    let keystore =
        keystore::parse(&text).with_context(|| format!("keystore {}", keystore_file.display()))?;
    let password = read_password_file(password_file)?;
    let secret = keystore::decrypt(&keystore, &password)
        .with_context(|| format!("decrypting keystore {}", keystore_file.display()))?;
    let store = slashing::open_store(config)?;
    let sealer = open_sealer(config)?;
    Ok(service::import_key(
        &store,
        sealer.as_ref(),
        &secret,
        ShareOrigin::Keystore,
        None,
    )?)
}

/// A keystore password file: only a final line break is removed (EIP-2335 passwords may contain
/// spaces; normalisation is the keystore module's job).
pub fn read_password_file(path: &Path) -> Result<SecretString> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading password file {}", path.display()))?,
    );
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(SecretString::from(trimmed.to_owned()))
}

/// `keys list`: one line per stored key (no HSM access needed).
pub fn list_keys(config: &Config, out: &mut dyn Write) -> Result<()> {
    let store = slashing::open_store(config)?;
    for record in store.shares()? {
        let state = if record.enabled { "active" } else { "deleted" };
        match &record.threshold {
            Some(t) => writeln!(
                out,
                "{} {} share {}/{} threshold {} group {}",
                record.public_key, state, t.index, t.participants, t.threshold, t.group_public_key
            )?,
            None => writeln!(
                out,
                "{} {} {}",
                record.public_key,
                state,
                record.origin.as_str()
            )?,
        }
    }
    Ok(())
}

/// `serve`: run the REST and gRPC APIs until SIGINT or SIGTERM (see `crate::app`).
pub async fn serve(config: &Config, listen: Option<SocketAddr>) -> Result<()> {
    crate::app::serve(
        config,
        crate::app::Listen {
            api: listen,
            metrics: None,
        },
    )
    .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// `certs generate` with the default server names (loopback).
pub fn generate_certs(out: &Path, clients: &[String]) -> Result<()> {
    generate_certs_for_servers(out, &[], clients)
}

/// `certs generate --server-name NAME...`: the server certificate carries each name (DNS or IP)
/// as a SAN; none means [`certs::DEFAULT_SERVER_NAMES`].
pub fn generate_certs_for_servers(
    out: &Path,
    server_names: &[String],
    clients: &[String],
) -> Result<()> {
    let clients = if clients.is_empty() {
        vec!["client".to_owned()]
    } else {
        clients.to_vec()
    };
    certs::generate(
        out,
        server_names,
        &clients,
        DEMO_CERT_VALIDITY_DAYS,
        certs::Overwrite::Refuse,
    )?;
    Ok(())
}

/// Validity of generated certificates (demo and test PKI).
pub const DEMO_CERT_VALIDITY_DAYS: u32 = 365;

/// Number of demo validator keys.
pub const DEMO_KEYS: usize = 3;

/// What `demo` prepared.
pub struct Demo {
    pub config_path: PathBuf,
    pub public_keys: Vec<BlsPublicKey>,
    pub attestation_file: PathBuf,
}

/// `demo`: a complete appliance in `dir` — certificates, SoftHSM2 token, sealing key, three
/// random validator keys sealed by the HSM. Reuses what an earlier run left in `dir`.
pub fn prepare_demo(dir: &Path, listen: SocketAddr) -> Result<Demo> {
    std::fs::create_dir_all(dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let config_path = dir.join("signer.toml");
    if !config_path.exists() {
        let certs_dir = dir.join("certs");
        if !certs_dir.join("ca.pem").exists() {
            generate_certs(&certs_dir, &["client".to_owned()])?;
        }
        std::fs::write(&config_path, config::example(&dir, listen))?;
    }
    let config = Config::load(&config_path)?;
    prepare_hsm_environment(&config);
    init(&config)?;
    let store = slashing::open_store(&config)?;
    let mut public_keys: Vec<BlsPublicKey> = store
        .shares()?
        .into_iter()
        .filter(|r| r.enabled)
        .map(|r| r.public_key)
        .collect();
    if public_keys.len() < DEMO_KEYS {
        let sealer = open_sealer(&config)?;
        while public_keys.len() < DEMO_KEYS {
            // Generated in memory and sealed at once: the demo keys never exist unsealed on disk.
            let secret = bls::SecretKey::random(&mut rand::rngs::OsRng);
            let (public_key, _) =
                service::import_key(&store, sealer.as_ref(), &secret, ShareOrigin::Demo, None)?;
            public_keys.push(public_key);
        }
    }
    let attestation_file = dir.join("attestation.json");
    std::fs::write(&attestation_file, DEMO_ATTESTATION)?;
    Ok(Demo {
        config_path,
        public_keys,
        attestation_file,
    })
}

/// A mainnet ATTESTATION request used by the demo's curl example.
pub const DEMO_ATTESTATION: &str = r#"{
  "type": "ATTESTATION",
  "fork_info": {
    "fork": {"previous_version": "0x05000000", "current_version": "0x06000000", "epoch": "411392"},
    "genesis_validators_root": "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
  },
  "attestation": {
    "slot": "13600000",
    "index": "0",
    "beacon_block_root": "0x04ec44543aec4417810c2ccc0114daa6d3271d1c9a73653bb608ee100e450de9",
    "source": {"epoch": "424999", "root": "0x5a385a301d04b51c8cf1651f7f3e85bb8717655851c0fa4747967c1bd04689e8"},
    "target": {"epoch": "425000", "root": "0xe397d8960c1df95bddb548f62749a924aadaec28ab9cd676dc7697263d67cf09"}
  }
}
"#;

/// The text `demo` prints: keys and a ready-to-paste curl command.
pub fn demo_instructions(demo: &Demo, config: &Config, listen: SocketAddr) -> String {
    let mut text =
        String::from("KeyStake demo signer\n\nValidator public keys (sealed by SoftHSM2):\n");
    for key in &demo.public_keys {
        text.push_str(&format!("  {key}\n"));
    }
    let client = config.client.as_ref();
    let cert = client.map_or(PathBuf::from("certs/client.pem"), |c| c.cert.clone());
    let key = client.map_or(PathBuf::from("certs/client.key"), |c| c.key.clone());
    text.push_str(&format!(
        "\nSign an attestation (mutual TLS):\n  curl --cert {} --key {} --cacert {} \\\n    -H 'Content-Type: application/json' --data @{} \\\n    https://{}/api/v1/eth2/sign/{}\n",
        cert.display(),
        key.display(),
        config.tls.ca_cert.display(),
        demo.attestation_file.display(),
        listen,
        demo.public_keys.first().map(|k| k.to_hex()).unwrap_or_default(),
    ));
    text.push_str(&format!(
        "\nConfiguration: {}\n",
        demo.config_path.display()
    ));
    text
}
