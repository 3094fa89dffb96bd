//! What each `keystake-signer` subcommand does, as library functions (the binary only parses
//! arguments). Every command is non-interactive: secrets come from files named in the
//! configuration or on the command line, never from arguments or prompts.
#![forbid(unsafe_code)]

pub mod admin;
pub mod slashing;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use secrecy::SecretString;

use crate::config::{self, Config};
use crate::net::pki as certs;
use crate::service;
use crate::store::{InsertOutcome, ShareOrigin};
use keystake_core::types::BlsPublicKey;
use keystake_core::{bls, keystore};

pub mod threshold;

/// `init`: data directory, SQLite store, HSM token, sealing key and enrolment key pair.
/// Idempotent.
pub fn init(config: &Config) -> Result<()> {
    crate::files::create_private_dir(&config.data_dir)?;
    crate::app::initialize_hsm(config)?;
    let store = crate::app::open_store(config)?;
    let token_file = config.keymanager_token_path();
    if crate::service::keymanager::ensure_token_file(&token_file)? {
        tracing::info!(file = %token_file.display(), "generated the keymanager API token");
    }
    tracing::info!(database = %store.path().display(), hsm = %config.hsm, "initialised");
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
    let store = crate::app::open_store(config)?;
    let sealer = crate::app::open_sealer(config)?;
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
    let store = crate::app::open_store(config)?;
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
        crate::files::write_file(
            &config_path,
            config::example(&dir, listen).as_bytes(),
            crate::files::PRIVATE_FILE_MODE,
            crate::files::Overwrite::Refuse,
        )?;
    }
    let config = Config::load(&config_path)?;
    crate::app::prepare_hsm_environment(&config);
    init(&config)?;
    let store = crate::app::open_store(&config)?;
    let mut public_keys: Vec<BlsPublicKey> = store
        .shares()?
        .into_iter()
        .filter(|r| r.enabled)
        .map(|r| r.public_key)
        .collect();
    if public_keys.len() < DEMO_KEYS {
        let sealer = crate::app::open_sealer(&config)?;
        while public_keys.len() < DEMO_KEYS {
            // Generated in memory and sealed at once: the demo keys never exist unsealed on disk.
            let secret = bls::SecretKey::random(&mut rand::rngs::OsRng);
            let (public_key, _) =
                service::import_key(&store, sealer.as_ref(), &secret, ShareOrigin::Demo, None)?;
            public_keys.push(public_key);
        }
    }
    let attestation_file = dir.join("attestation.json");
    crate::files::write_file(
        &attestation_file,
        DEMO_ATTESTATION.as_bytes(),
        crate::files::PUBLIC_FILE_MODE,
        crate::files::Overwrite::Replace,
    )?;
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
