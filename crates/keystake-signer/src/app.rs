//! The one composition root: configuration → HSM → store → service → listeners. Every command
//! opens the parts it needs through these functions, so each part is opened one way only.
//! `serve` composes the running appliance — store, HSM, signing service with its authorization
//! policy, the mutual-TLS listener (REST and gRPC on one port), the optional Prometheus
//! listener — and runs it until SIGINT/SIGTERM. SIGHUP re-reads the policy file and the CRL.
//!
//! Refuses to start when the policy file or any TLS file is unusable (the error names the file),
//! when the database belongs to another network, and when core dumps cannot be disabled.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use rand::RngCore;

use crate::config::{self, Config};
use crate::hsm::pkcs11::{Pkcs11Config, Pkcs11Sealer};
use crate::hsm::Sealer;
use crate::net::listen::{self as api, TlsReloader};
use crate::net::metrics::Metrics;
use crate::net::tls::TlsFiles;
use crate::service::authz::Authorizer;
use crate::service::SigningService;
use crate::store::{Store, StoreOptions};
use keystake_core::consensus::Network;
use keystake_core::slashing::Watermark;
use keystake_core::types::{Epoch, Slot};

/// Where to listen, overriding the configuration (tests use port 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Listen {
    pub api: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// The parts of a running appliance, before it serves.
pub struct Appliance {
    pub service: Arc<SigningService>,
    pub metrics: Arc<Metrics>,
    pub tls: Arc<TlsReloader>,
    pub listener: tokio::net::TcpListener,
}

/// Open everything the configuration names and bind the API listener.
pub async fn build(config: &Config, listen: Listen) -> Result<Appliance> {
    let network = network(config)?;
    let authorizer = Arc::new(Authorizer::from_config(config.policy_file.as_deref())?);
    let store = Arc::new(open_store(config)?);
    if let Some(root) = network.genesis_validators_root {
        // Bind before serving: a request carrying another network's root is then refused from
        // the first one, instead of binding the database to whichever network asks first.
        store.bind_genesis_validators_root(root).with_context(|| {
            format!(
                "the slashing database {} does not belong to network {}",
                store.path().display(),
                network.name
            )
        })?;
    }
    let sealer = open_sealer(config)?;
    let metrics = Arc::new(Metrics::new());
    let service = Arc::new(
        SigningService::new(store, sealer, network)?
            .with_authorizer(authorizer.clone())
            .with_observer(metrics.clone()),
    );
    let tls = Arc::new(TlsReloader::from_files(TlsFiles {
        ca_cert: config.tls.ca_cert.clone(),
        server_cert: config.tls.server_cert.clone(),
        server_key: config.tls.server_key.clone(),
        crl: config.tls.crl.clone(),
    })?);
    authorizer.also_reload(tls.clone());
    let address = listen.api.unwrap_or(config.listen);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    Ok(Appliance {
        service,
        metrics,
        tls,
        listener,
    })
}

/// Run the appliance until SIGINT or SIGTERM.
pub async fn serve(config: &Config, listen: Listen) -> Result<()> {
    let appliance = build(config, listen).await?;
    let address = appliance.listener.local_addr()?;
    let service = appliance.service.clone();
    tracing::info!(%address, keys = service.public_keys().len(), network = %service.network().name, "listening (REST and gRPC, mutual TLS)");
    // A line a script can wait for, whatever the log filter.
    println!("listening on https://{address}");
    tokio::spawn(reload_on_sighup(service.clone()));
    if let Some(metrics_address) = listen.metrics.or(config.metrics_listen) {
        let metrics_listener = crate::net::metrics::bind(metrics_address)
            .await
            .with_context(|| format!("binding the metrics listener {metrics_address}"))?;
        let bound = metrics_listener.local_addr()?;
        tracing::info!(address = %bound, "metrics listening (plain HTTP)");
        println!("metrics on http://{bound}/metrics");
        tokio::spawn(crate::net::metrics::serve(
            metrics_listener,
            appliance.metrics.clone(),
            service.clone(),
        ));
    }
    let token = crate::service::keymanager::BearerToken::load(&config.keymanager_token_path())?;
    let keymanager = Arc::new(crate::service::keymanager::Keymanager::new(
        service.clone(),
        token,
    ));
    let app = api::app(service, crate::net::rest::keymanager::router(keymanager));
    api::serve_mtls(appliance.listener, appliance.tls, app, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: re-read the policy and the CRL; a failed reload keeps the previous ones.
async fn reload_on_sighup(service: Arc<SigningService>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; reload through the admin call instead");
        return;
    };
    while hangup.recv().await.is_some() {
        match service.authorizer().reload() {
            Ok(summary) => {
                tracing::info!(
                    enforced = summary.enforced,
                    clients = summary.clients,
                    crl = summary.tls_reloaded,
                    "reloaded on SIGHUP"
                )
            }
            Err(error) => {
                tracing::error!(%error, "reload on SIGHUP failed; previous policy and TLS configuration kept")
            }
        }
    }
}

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

pub fn pkcs11_config(config: &Config) -> Pkcs11Config {
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

/// The store options `signer.toml` selects (`[slashing]`).
pub fn store_options(config: &Config) -> StoreOptions {
    let epoch = config.slashing.new_key_min_epoch.map(Epoch);
    StoreOptions {
        new_key_watermark: Watermark {
            block_slot: config.slashing.new_key_min_slot.map(Slot),
            attestation_source: epoch,
            attestation_target: epoch,
        },
        ..StoreOptions::default()
    }
}

/// Open the appliance database with the configured options.
pub fn open_store(config: &Config) -> Result<Store> {
    let path = config.database_path();
    Store::open_with(&path, store_options(config)).with_context(|| {
        format!(
            "opening the slashing-protection database {}",
            path.display()
        )
    })
}

/// Create what the HSM needs for `init`: the SoftHSM2 configuration (when one is configured and
/// missing), random PINs (when their files are missing), the token with its sealing key, and the
/// enrolment key pair. Idempotent.
pub fn initialize_hsm(config: &Config) -> Result<()> {
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
    Ok(())
}

/// Write a random secret (hex of 16 random bytes) to `path` with mode 0600, unless it exists.
fn ensure_secret_file(path: &Path) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        crate::files::create_private_dir(parent)?;
    }
    let mut bytes = zeroize::Zeroizing::new([0u8; 16]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let text = zeroize::Zeroizing::new(hex::encode(bytes.as_slice()));
    crate::files::write_file(
        path,
        text.as_bytes(),
        crate::files::PRIVATE_FILE_MODE,
        crate::files::Overwrite::Refuse,
    )?;
    Ok(true)
}
