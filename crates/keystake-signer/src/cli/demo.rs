//! `keystake-signer demo --dir DIR`: a complete appliance in DIR — `signer.toml`, SoftHSM2
//! token with the sealing key and the TLS key, a demo PKI whose server certificate is issued to
//! that TLS key (no server key file), three random validator keys sealed by the HSM (generated in
//! memory, never written unsealed), a policy naming only the demo client certificate (by
//! fingerprint: any other certificate of the demo CA is refused) — then the instructions (keys
//! and a ready-to-paste curl
//! command) and, unless `--no-serve`, `serve` on `--listen`. Reuses what an earlier run left in
//! DIR (certificates, configuration, keys).
//!
//! Refuses: a DIR that cannot be created or resolved, a `signer.toml` there that does not load,
//! and what `init` and `serve` refuse.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::certs::{generate_certs, generate_certs_for_hsm_key};
use super::init::init;
use crate::config::{self, Config};
use crate::service;
use crate::store::ShareOrigin;
use keystake_core::bls;
use keystake_core::types::BlsPublicKey;

/// `keystake-signer demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Prepare everything, print the instructions, and exit without serving.
    #[arg(long)]
    pub no_serve: bool,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let demo = prepare_demo(&args.dir, args.listen)?;
    let config = Config::load(&demo.config_path)?;
    print!("{}", demo_instructions(&demo, &config, args.listen));
    if !args.no_serve {
        super::serving_runtime(&config)?
            .block_on(super::serve::serve(&config, Some(args.listen)))?;
    }
    Ok(())
}

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
        crate::files::write_file(
            &config_path,
            config::example(&dir, listen).as_bytes(),
            crate::files::PRIVATE_FILE_MODE,
            crate::files::Overwrite::Refuse,
        )?;
    }
    let config = Config::load(&config_path)?;
    crate::app::prepare_hsm_environment(&config);
    // `init` first: it generates the TLS key in the HSM that the server certificate is for.
    init(&config)?;
    let certs_dir = dir.join("certs");
    if !certs_dir.join("ca.pem").exists() {
        match &config.tls.server_key {
            None => generate_certs_for_hsm_key(&config, &certs_dir, &[], &["client".to_owned()])?,
            Some(_) => generate_certs(&certs_dir, &["client".to_owned()])?,
        }
        // Again, now that the client certificate exists: `init` writes the first policy naming
        // it (idempotent otherwise).
        init(&config)?;
    }
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
    if let Some(policy) = &config.policy_file {
        text.push_str(&format!(
            "Policy (only the demo client certificate may sign): {}\n",
            policy.display()
        ));
    }
    text
}
