//! The one composition root: configuration → HSM → store → service → listeners. Every command
//! opens the parts it needs through these functions, so each part is opened one way only.
//! `serve` composes the running appliance — store, HSM, signing service with its authorization
//! policy, the mutual-TLS listener (REST and gRPC on one port), the optional Prometheus
//! listener — and runs it until SIGINT/SIGTERM. SIGHUP re-reads the policy file and the CRL.
//!
//! The HSM functions here are the only place that names a backend: [`open_sealer`] and
//! [`initialize_hsm`] dispatch on `[hsm] backend` (PKCS#11 or YubiHSM2), and so does the
//! enrolment key ([`open_enrolment_key`]: a key pair in the PKCS#11 token, a scalar derived from
//! an on-device HMAC key on a YubiHSM2).
//!
//! Refuses to start when the policy file or any TLS file is unusable (the error names the file),
//! when the database belongs to another network, when core dumps cannot be disabled, and when
//! `backend = "yubihsm"` in a build without the `yubihsm` feature.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use rand::RngCore;

#[cfg(feature = "yubihsm")]
use crate::config::YubiHsmConnectorSetting;
use crate::config::{self, Config, HsmSection, Pkcs11Section, YubiHsmSection};
use crate::hsm::check::CheckReport;
use crate::hsm::enrolment::{EnrolmentKey, Pkcs11EnrolmentKey};
use crate::hsm::pkcs11::{Pkcs11Config, Pkcs11Sealer};
use crate::hsm::signing_key::{HsmSigningKey, KeyRole, Pkcs11SigningKey};
#[cfg(feature = "yubihsm")]
use crate::hsm::yubihsm::{YubiHsmConfig, YubiHsmSealer};
#[cfg(feature = "yubihsm")]
use crate::hsm::yubihsm_enrolment::YubiHsmEnrolmentKey;
use crate::hsm::Sealer;
use crate::net::listen::{self as api, TlsReloader};
use crate::net::metrics::{Metrics, PruneOutcome};
use crate::net::tls::{HsmTlsKey, ServerKey, TlsFiles};
use crate::service::authz::Authorizer;
use crate::service::SigningService;
use crate::store::{Store, StoreOptions};
use keystake_core::consensus::Network;
use keystake_core::manifest::{CheckedPackage, EnrolmentPublicKey};
use keystake_core::slashing::Watermark;
use keystake_core::threshold::SecretShare;
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
    let authorizer = Arc::new(Authorizer::from_config(
        config.policy_file.as_deref(),
        config.allow_any_client,
    )?);
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
    if network.clock().is_none() {
        tracing::warn!(
            network = %network.name,
            "the network file gives no genesis_time: duties far ahead of the wall clock are NOT refused (a far-future attestation would block its key); add genesis_time to the network file"
        );
    }
    // One HSM connection for sealing and the TLS key (the PKCS#11 session pool, or the
    // YubiHSM2 session), unless the TLS key is a file.
    let (sealer, tls_key) = match &config.tls.server_key {
        Some(_) => (open_sealer(config)?, None),
        None => {
            let (sealer, key) = open_sealer_with_signing_key(config, KeyRole::Tls)?;
            (sealer, Some(key))
        }
    };
    // Before anything listens: an HSM or pairing library that misbehaves must not serve.
    crate::service::health::startup_self_test(sealer.as_ref())?;
    tracing::info!("start-up self-test passed (HSM seal/unseal, BLS sign/verify)");
    let metrics = Arc::new(Metrics::new());
    let unseal_policy = config.hsm.unseal_cache()?;
    if let Some(policy) = unseal_policy {
        tracing::warn!(
            ttl_secs = policy.ttl.as_secs(),
            max_entries = policy.max_entries,
            "unseal cache on: unsealed shares stay in memory up to the TTL ([hsm] unseal_cache)"
        );
    }
    let mut service = SigningService::new(store, sealer, network)?;
    if let Some(policy) = unseal_policy {
        service = service.with_unseal_cache(Arc::new(
            crate::service::unseal_cache::UnsealCache::new(policy),
        ));
    }
    let service = Arc::new(
        service
            .with_authorizer(authorizer.clone())
            .with_observer(metrics.clone())
            .with_future_margin_epochs(
                config
                    .slashing
                    .future_margin_epochs
                    .unwrap_or(keystake_core::clock::DEFAULT_FUTURE_MARGIN_EPOCHS),
            ),
    );
    // DKG peers of other operators are accepted by the certificates their running ceremonies
    // pin (net::pinned), for the DKG service only.
    let pins = Arc::new(crate::net::pinned::PinSet::from_database(
        config.database_path(),
    ));
    let tls = Arc::new(TlsReloader::from_files_with_pins(
        TlsFiles {
            ca_cert: config.tls.ca_cert.clone(),
            server_cert: config.tls.server_cert.clone(),
            server_key: server_key_with(config, tls_key)?,
            crl: config.tls.crl.clone(),
        },
        Some(pins),
    )?);
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

/// The TLS server key: the HSM's `Tls` key unless `[tls] server_key` names a file (opt-out).
pub fn server_key(config: &Config) -> Result<ServerKey> {
    server_key_with(config, None)
}

/// [`server_key`] with the HSM key already opened (by `build`, on the sealer's connection);
/// `None` opens it here.
fn server_key_with(config: &Config, opened: Option<Arc<dyn HsmSigningKey>>) -> Result<ServerKey> {
    if let (None, Some(key)) = (&config.tls.server_key, opened) {
        return Ok(ServerKey::Hsm(HsmTlsKey(key)));
    }
    match &config.tls.server_key {
        Some(path) => {
            tracing::warn!(
                file = %path.display(),
                "the TLS server key is a file ([tls] server_key): whoever reads it can \
                 impersonate this appliance; remove the setting to use the key in the HSM"
            );
            Ok(ServerKey::File(path.clone()))
        }
        None => Ok(ServerKey::Hsm(HsmTlsKey(open_signing_key(
            config,
            KeyRole::Tls,
        )?))),
    }
}

/// Run the appliance until SIGINT or SIGTERM.
pub async fn serve(config: &Config, listen: Listen) -> Result<()> {
    // Before the PIN is read and anything is unsealed: every page from here on is locked.
    match crate::memlock::lock_process_memory(config.process.lock_memory)
        .context("refusing to start")?
    {
        crate::memlock::MemoryLock::Locked => {
            tracing::info!("process memory locked against swap (mlockall)")
        }
        crate::memlock::MemoryLock::Unlocked(reason) => tracing::warn!(
            "process memory NOT locked against swap: unsealed shares may be paged out; {reason} \
             ([process] lock_memory = \"required\" refuses to start instead)"
        ),
        crate::memlock::MemoryLock::Disabled => {
            tracing::warn!("[process] lock_memory = \"off\": memory not locked against swap")
        }
    }
    let appliance = build(config, listen).await?;
    let address = appliance.listener.local_addr()?;
    let service = appliance.service.clone();
    tracing::info!(%address, keys = service.public_keys().len(), network = %service.network().name, "listening (REST and gRPC, mutual TLS)");
    // A line a script can wait for, whatever the log filter.
    println!("listening on https://{address}");
    tokio::spawn(reload_on_sighup(service.clone()));
    if let Some(cache) = service.unseal_cache() {
        tokio::spawn(sweep_unseal_cache(cache));
    }
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
    // Start-up is over (HSM open and self-tested, files read, listeners bound): from here on only
    // the calls serving needs (crate::sandbox).
    if config.sandbox.seccomp {
        crate::sandbox::confine_serving_process().context("confining the serving process")?;
        tracing::info!("seccomp allow-list installed on every thread");
    } else {
        tracing::warn!("[sandbox] seccomp = false: the serving process is not confined");
    }
    // Only now, with every fallible start-up step behind it: a start that fails must not leave
    // a prune writing to the database. The sender stops it between two of its transactions at
    // shutdown, and so does dropping it.
    let (stop_pruning, pruning_stopped) = tokio::sync::watch::channel(false);
    let pruning = config.slashing.prune.map(|setting| {
        tokio::spawn(prune_on_schedule(
            appliance.service.clone(),
            appliance.metrics.clone(),
            setting,
            pruning_stopped,
        ))
    });
    api::serve_mtls(appliance.listener, appliance.tls, app, shutdown_signal()).await;
    if let Some(pruning) = pruning {
        // A prune in progress ends after its current transaction (each commit is covered).
        let _ = stop_pruning.send(true);
        if tokio::time::timeout(PRUNE_STOP_WAIT, pruning)
            .await
            .is_err()
        {
            tracing::warn!(
                "the scheduled prune did not stop in time; its committed transactions are covered"
            );
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// `serve`'s start-up refusal of files other users could read: the configuration file, the data
/// directory, the keymanager token file and the HSM PIN / password files (the same check
/// [`config::read_secret_file`] makes). A world-readable configuration names where the secrets
/// are and who may sign; a group-readable data directory exposes the slashing history and the
/// SoftHSM2 token.
pub fn check_private_files(config_path: &Path, config: &Config) -> Result<()> {
    let mut paths = vec![
        config_path.to_owned(),
        config.data_dir.clone(),
        config.keymanager_token_path(),
    ];
    match &config.hsm {
        HsmSection::Pkcs11(section) => paths.push(section.user_pin_file.clone()),
        HsmSection::YubiHsm(section) => paths.push(section.password_file.clone()),
    }
    for path in paths {
        config::check_private(&path).context("refusing to start")?;
    }
    Ok(())
}

/// How long shutdown waits for a scheduled prune to end its current transaction.
const PRUNE_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `[slashing] prune`: prune the slashing history at start and then `interval_secs` after each
/// prune ends, on a blocking thread, until `stopped` turns true (shutdown), which also ends a
/// prune in progress between two transactions. A failed prune is logged and counted and tried
/// again at the next interval; it never stops serving (the writer fails closed on its own when
/// storage misbehaves).
async fn prune_on_schedule(
    service: Arc<SigningService>,
    metrics: Arc<Metrics>,
    setting: config::PruneSetting,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    // Validated when the configuration was loaded.
    let interval = setting.interval().unwrap_or(std::time::Duration::from_secs(
        config::DEFAULT_PRUNE_INTERVAL_SECS,
    ));
    tracing::info!(
        keep_epochs = setting.keep_epochs,
        interval_secs = interval.as_secs(),
        "scheduled pruning of the slashing history on ([slashing] prune)"
    );
    loop {
        let store = service.store().clone();
        let watch = stopped.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            // Stopped, or the sender gone (serve is returning): stop.
            store.prune_attestations_while(setting.keep_epochs, &|| {
                !*watch.borrow() && watch.has_changed().is_ok()
            })
        })
        .await;
        match result {
            Ok(Ok(summary)) => {
                metrics.pruned(
                    summary.attestations,
                    if summary.stopped_early {
                        PruneOutcome::Stopped
                    } else {
                        PruneOutcome::Completed
                    },
                );
                tracing::info!(
                    removed = summary.attestations,
                    validators = summary.validators,
                    transactions = summary.transactions,
                    stopped_early = summary.stopped_early,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    keep_epochs = setting.keep_epochs,
                    "pruned the slashing history; watermarks cover what was removed"
                );
            }
            Ok(Err(failed)) => {
                // What the committed transactions removed stays removed: counted as such.
                metrics.pruned(failed.committed.attestations, PruneOutcome::Failed);
                tracing::error!(error = %failed.error, removed = failed.committed.attestations, transactions = failed.committed.transactions, "scheduled prune failed; it runs again at the next interval");
            }
            Err(error) => {
                metrics.pruned(0, PruneOutcome::Failed);
                tracing::error!(%error, "scheduled prune task failed; it runs again at the next interval");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Expired unsealed shares leave memory on a timer, not only when the next request looks.
async fn sweep_unseal_cache(cache: Arc<crate::service::unseal_cache::UnsealCache>) {
    let mut ticks = tokio::time::interval(crate::service::unseal_cache::SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        cache.sweep();
    }
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
    if let HsmSection::Pkcs11(Pkcs11Section {
        softhsm2_conf: Some(conf),
        ..
    }) = &config.hsm
    {
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
}

/// The PKCS#11 backend's settings from `[hsm]`.
pub fn pkcs11_config(section: &Pkcs11Section) -> Pkcs11Config {
    Pkcs11Config {
        module: section.module.clone(),
        token_label: section.token_label.clone(),
        key_label: section.key_label.clone(),
        sessions: section
            .sessions
            .unwrap_or_else(crate::hsm::pkcs11::default_session_count),
    }
}

/// The YubiHSM2 backend's settings from `[hsm]` (the password comes from `password_file`).
#[cfg(feature = "yubihsm")]
pub fn yubihsm_config(section: &YubiHsmSection) -> YubiHsmConfig {
    use crate::hsm::yubihsm::YubiHsmConnector;
    let connector = match &section.connector {
        YubiHsmConnectorSetting::Http { host, port } => YubiHsmConnector::Http {
            addr: host.clone(),
            port: *port,
            timeout_ms: section
                .timeout_ms
                .unwrap_or_else(|| yubihsm::HttpConfig::default().timeout_ms),
        },
        YubiHsmConnectorSetting::Usb => YubiHsmConnector::Usb {
            serial: section.usb_serial.clone(),
            timeout_ms: section
                .timeout_ms
                .unwrap_or(yubihsm::UsbConfig::DEFAULT_TIMEOUT_MILLIS),
        },
    };
    YubiHsmConfig {
        connector,
        auth_key_id: section.auth_key_id,
        key_id: section.key_id,
        key_label: section.key_label.clone(),
        domain: section.domain,
    }
}

/// Open the HSM sealer named by the configuration: the backend `[hsm] backend` selects.
pub fn open_sealer(config: &Config) -> Result<Arc<dyn Sealer>> {
    match &config.hsm {
        HsmSection::Pkcs11(section) => {
            let pin = config::read_secret_file(&section.user_pin_file)?;
            let sealer = Pkcs11Sealer::open(&pkcs11_config(section), &pin)
                .with_context(|| format!("opening HSM token {:?}", section.token_label))?;
            Ok(Arc::new(sealer))
        }
        HsmSection::YubiHsm(section) => open_yubihsm(section),
    }
}

#[cfg(feature = "yubihsm")]
fn open_yubihsm(section: &YubiHsmSection) -> Result<Arc<dyn Sealer>> {
    let password = yubihsm_password(section)?;
    let sealer = YubiHsmSealer::open(&yubihsm_config(section), &password)
        .with_context(|| format!("opening the YubiHSM2 at {}", section.connector))?;
    Ok(Arc::new(sealer))
}

#[cfg(not(feature = "yubihsm"))]
fn open_yubihsm(_: &YubiHsmSection) -> Result<Arc<dyn Sealer>> {
    Err(without_yubihsm_feature())
}

/// [`open_sealer`] for a YubiHSM2 configuration over a connector the caller built (tests:
/// `yubihsm::Connector::mockhsm()`, the crate's in-memory device); `hsm.connector` is not used,
/// everything else (password file, key id and label, domain) is.
#[cfg(feature = "yubihsm")]
pub fn open_sealer_with(config: &Config, connector: yubihsm::Connector) -> Result<Arc<dyn Sealer>> {
    let section = yubihsm_section(config)?;
    let password = yubihsm_password(section)?;
    let sealer = YubiHsmSealer::open_with(connector, &yubihsm_config(section), &password)
        .context("opening the YubiHSM2")?;
    Ok(Arc::new(sealer))
}

/// [`initialize_hsm`] for a YubiHSM2 configuration over a connector the caller built (see
/// [`open_sealer_with`]).
#[cfg(feature = "yubihsm")]
pub fn initialize_hsm_with(config: &Config, connector: yubihsm::Connector) -> Result<()> {
    let section = yubihsm_section(config)?;
    let password = yubihsm_password(section)?;
    let yubihsm = yubihsm_config(section);
    YubiHsmSealer::initialize_with(connector.clone(), &yubihsm, &password)
        .context("creating the YubiHSM2 sealing key")?;
    let sealer =
        YubiHsmSealer::open_with(connector, &yubihsm, &password).context("opening the YubiHSM2")?;
    ensure_yubihsm_signing_keys(&sealer)
}

/// `init` on a YubiHSM2: the TLS server key and the identity key, generated on the device.
#[cfg(feature = "yubihsm")]
fn ensure_yubihsm_signing_keys(sealer: &YubiHsmSealer) -> Result<()> {
    for role in KeyRole::ALL {
        sealer
            .ensure_signing_key(role)
            .with_context(|| format!("creating the {role} on the YubiHSM2"))?;
    }
    // The key share packages of a trusted split are encrypted to (docs/threshold.md).
    YubiHsmEnrolmentKey::ensure(sealer).context("creating the enrolment key on the YubiHSM2")?;
    Ok(())
}

#[cfg(feature = "yubihsm")]
fn yubihsm_section(config: &Config) -> Result<&YubiHsmSection> {
    match &config.hsm {
        HsmSection::YubiHsm(section) => Ok(section),
        other => anyhow::bail!(
            "a YubiHSM2 connector was given, but [hsm] has backend = {:?}",
            other.backend()
        ),
    }
}

#[cfg(feature = "yubihsm")]
fn yubihsm_password(section: &YubiHsmSection) -> Result<secrecy::SecretString> {
    config::read_secret_file(&section.password_file).with_context(|| {
        format!(
            "hsm.password_file: the password of YubiHSM2 authentication key {:#06x}",
            section.auth_key_id
        )
    })
}

/// What a build without the `yubihsm` feature answers to `backend = "yubihsm"`.
#[cfg(not(feature = "yubihsm"))]
fn without_yubihsm_feature() -> anyhow::Error {
    anyhow::anyhow!(
        "[hsm] backend = \"yubihsm\", but this keystake-signer was built without the `yubihsm` \
         cargo feature; rebuild with `--features yubihsm` (on by default) or use backend = \"pkcs11\""
    )
}

/// The sealer and the signing key of `role` on **one** connection to the HSM: for PKCS#11 the
/// key signs on the sealer's bounded session pool (`[hsm] sessions`; a signature borrows one
/// session for one `C_Sign`, no lock is held across it), for a YubiHSM2 on the sealer's
/// authenticated session. What `serve` uses for the TLS key, so unseals and handshakes share
/// the token's sessions instead of opening a second pool.
pub fn open_sealer_with_signing_key(
    config: &Config,
    role: KeyRole,
) -> Result<(Arc<dyn Sealer>, Arc<dyn HsmSigningKey>)> {
    match &config.hsm {
        HsmSection::Pkcs11(section) => {
            let (sealer, key) = open_pkcs11_with_signing_key(section, role)?;
            Ok((sealer, key))
        }
        HsmSection::YubiHsm(section) => open_yubihsm_with_signing_key(section, role),
    }
}

fn open_pkcs11_with_signing_key(
    section: &Pkcs11Section,
    role: KeyRole,
) -> Result<(Arc<Pkcs11Sealer>, Arc<Pkcs11SigningKey>)> {
    let pin = config::read_secret_file(&section.user_pin_file)?;
    let sealer = Arc::new(
        Pkcs11Sealer::open(&pkcs11_config(section), &pin)
            .with_context(|| format!("opening HSM token {:?}", section.token_label))?,
    );
    let key = Pkcs11SigningKey::open(Arc::clone(&sealer), role)
        .with_context(|| format!("opening the {role} in the HSM"))?;
    Ok((sealer, Arc::new(key)))
}

#[cfg(feature = "yubihsm")]
fn open_yubihsm_with_signing_key(
    section: &YubiHsmSection,
    role: KeyRole,
) -> Result<(Arc<dyn Sealer>, Arc<dyn HsmSigningKey>)> {
    let password = yubihsm_password(section)?;
    let sealer = YubiHsmSealer::open(&yubihsm_config(section), &password)
        .with_context(|| format!("opening the YubiHSM2 at {}", section.connector))?;
    let key = sealer
        .signing_key(role)
        .with_context(|| format!("opening the {role} on the YubiHSM2"))?;
    Ok((Arc::new(sealer), Arc::new(key)))
}

#[cfg(not(feature = "yubihsm"))]
fn open_yubihsm_with_signing_key(
    _: &YubiHsmSection,
    _: KeyRole,
) -> Result<(Arc<dyn Sealer>, Arc<dyn HsmSigningKey>)> {
    Err(without_yubihsm_feature())
}

/// Open the HSM signing key of `role` (the TLS server key or the identity key that signs DKG
/// broadcasts and the audit head), created by `init`. Refuses a missing or unfit key and
/// self-tests it (a signature verified in software). For commands that need only the key;
/// `serve` opens it with the sealer ([`open_sealer_with_signing_key`]).
pub fn open_signing_key(config: &Config, role: KeyRole) -> Result<Arc<dyn HsmSigningKey>> {
    // The sealer is dropped; the key keeps the connection (pool or session) it needs.
    Ok(open_sealer_with_signing_key(config, role)?.1)
}

/// [`open_signing_key`] on a YubiHSM2 reached through `connector` (tests: the crate's mock
/// device, `yubihsm::Connector::mockhsm()`); `hsm.connector` is not used.
#[cfg(feature = "yubihsm")]
pub fn open_signing_key_with(
    config: &Config,
    connector: yubihsm::Connector,
    role: KeyRole,
) -> Result<Arc<dyn HsmSigningKey>> {
    let section = yubihsm_section(config)?;
    let password = yubihsm_password(section)?;
    let sealer = YubiHsmSealer::open_with(connector, &yubihsm_config(section), &password)
        .context("opening the YubiHSM2")?;
    let key = sealer
        .signing_key(role)
        .with_context(|| format!("opening the {role} on the YubiHSM2"))?;
    Ok(Arc::new(key))
}

/// `hsm check`: ask the configured HSM about every mechanism the appliance needs.
pub fn hsm_check(config: &Config) -> Result<CheckReport> {
    match &config.hsm {
        HsmSection::Pkcs11(section) => crate::hsm::check::check_pkcs11(&pkcs11_config(section))
            .with_context(|| format!("asking HSM token {:?}", section.token_label)),
        HsmSection::YubiHsm(section) => yubihsm_check(section),
    }
}

#[cfg(feature = "yubihsm")]
fn yubihsm_check(section: &YubiHsmSection) -> Result<CheckReport> {
    let password = yubihsm_password(section)?;
    let sealer = YubiHsmSealer::open(&yubihsm_config(section), &password)
        .with_context(|| format!("opening the YubiHSM2 at {}", section.connector))?;
    let query =
        crate::hsm::check::YubiHsmAlgorithms::from_client(sealer.client(), sealer.describe())?;
    Ok(CheckReport::run(&query)?)
}

#[cfg(not(feature = "yubihsm"))]
fn yubihsm_check(_: &YubiHsmSection) -> Result<CheckReport> {
    Err(without_yubihsm_feature())
}

/// The configured backend's enrolment key: the key pair in the PKCS#11 token, or on a YubiHSM2
/// the scalar derived from the on-device enrolment HMAC key (`hsm::yubihsm_enrolment`).
pub fn open_enrolment_key(config: &Config) -> Result<Box<dyn EnrolmentKey>> {
    match &config.hsm {
        HsmSection::Pkcs11(section) => {
            let pin = config::read_secret_file(&section.user_pin_file)?;
            Ok(Box::new(Pkcs11EnrolmentKey::open(
                &pkcs11_config(section),
                &pin,
            )?))
        }
        HsmSection::YubiHsm(section) => open_yubihsm_enrolment_key(section),
    }
}

#[cfg(feature = "yubihsm")]
fn open_yubihsm_enrolment_key(section: &YubiHsmSection) -> Result<Box<dyn EnrolmentKey>> {
    let password = yubihsm_password(section)?;
    let sealer = YubiHsmSealer::open(&yubihsm_config(section), &password)
        .with_context(|| format!("opening the YubiHSM2 at {}", section.connector))?;
    Ok(Box::new(YubiHsmEnrolmentKey::open(&sealer)?))
}

#[cfg(not(feature = "yubihsm"))]
fn open_yubihsm_enrolment_key(_: &YubiHsmSection) -> Result<Box<dyn EnrolmentKey>> {
    Err(without_yubihsm_feature())
}

/// [`open_enrolment_key`] on a YubiHSM2 reached through `connector` (tests: the crate's mock).
#[cfg(feature = "yubihsm")]
pub fn open_enrolment_key_with(
    config: &Config,
    connector: yubihsm::Connector,
) -> Result<Box<dyn EnrolmentKey>> {
    let section = yubihsm_section(config)?;
    let password = yubihsm_password(section)?;
    let sealer = YubiHsmSealer::open_with(connector, &yubihsm_config(section), &password)
        .context("opening the YubiHSM2")?;
    Ok(Box::new(YubiHsmEnrolmentKey::open(&sealer)?))
}

/// `enrolment show`: this appliance's enrolment public key (what share packages are encrypted
/// to), on either backend.
pub fn enrolment_public_key(config: &Config) -> Result<EnrolmentPublicKey> {
    Ok(open_enrolment_key(config)?.public_key())
}

/// The DKG tables of the database (`store::dkg`), after the store itself is opened (and
/// migrated).
pub fn open_dkg_store(config: &Config) -> Result<crate::store::dkg::DkgStore> {
    drop(open_store(config)?);
    let path = config.database_path();
    crate::store::dkg::DkgStore::open(&path)
        .with_context(|| format!("opening the DKG tables of {}", path.display()))
}

/// `dkg run`: the enrolment key as a DKG share decryptor (either backend, like share packages).
pub fn open_enrolment_decryptor(
    config: &Config,
) -> Result<crate::hsm::enrolment::EnrolmentDecryptor> {
    Ok(crate::hsm::enrolment::EnrolmentDecryptor::new(
        open_enrolment_key(config)?,
    ))
}

/// `keys import-share`: open a checked share package with this appliance's enrolment key and
/// check the share against the manifest.
pub fn open_share_package(config: &Config, package: &CheckedPackage) -> Result<SecretShare> {
    open_share_package_with_key(open_enrolment_key(config)?.as_ref(), package)
}

/// [`open_share_package`] with an enrolment key already opened (tests: on the mock YubiHSM2,
/// through [`open_enrolment_key_with`]).
pub fn open_share_package_with_key(
    key: &dyn EnrolmentKey,
    package: &CheckedPackage,
) -> Result<SecretShare> {
    check_ephemeral_point(&package.ephemeral_public_key)?;
    Ok(crate::hsm::enrolment::open_package_with(key, package)?)
}

/// Refuse a share package whose ephemeral key is not a point of P-256 before the token derives
/// with it (issue 17): ECDH with an attacker's off-curve point is the invalid-curve attack on the
/// enrolment private key — each accepted or refused decryption would leak part of it — and not
/// every token validates the peer point. ring validates it fully (on the curve, not the point at
/// infinity; P-256 has cofactor 1) before any agreement, so a throwaway agreement is the check.
fn check_ephemeral_point(point: &EnrolmentPublicKey) -> Result<()> {
    use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
    let rng = ring::rand::SystemRandom::new();
    let throwaway = EphemeralPrivateKey::generate(&ECDH_P256, &rng)
        .map_err(|_| anyhow::anyhow!("cannot generate a P-256 key to check the package"))?;
    agree_ephemeral(
        throwaway,
        &UnparsedPublicKey::new(&ECDH_P256, point.as_sec1()),
        |_| (),
    )
    .map_err(|_| {
        anyhow::anyhow!(
            "the share package's ephemeral key is not a valid P-256 point; refusing to let the \
             token derive with it (forged or damaged package)"
        )
    })
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

/// Create what the HSM needs for `init`, idempotently. PKCS#11: the SoftHSM2 configuration
/// (when one is configured and missing), random PINs (when their files are missing), the token
/// with its sealing key, and the enrolment key pair. YubiHSM2: the HMAC sealing key and the enrolment
/// HMAC key (when absent; capability `sign-hmac` only) and the P-256 signing keys, logging in with the configured authentication key, whose
/// password file must exist — the signer cannot choose that password.
pub fn initialize_hsm(config: &Config) -> Result<()> {
    match &config.hsm {
        HsmSection::Pkcs11(section) => initialize_pkcs11(section),
        HsmSection::YubiHsm(section) => initialize_yubihsm(section),
    }
}

fn initialize_pkcs11(section: &Pkcs11Section) -> Result<()> {
    if let Some(conf) = &section.softhsm2_conf {
        if !conf.exists() {
            let dir = conf
                .parent()
                .context("softhsm2_conf has no parent directory")?;
            std::fs::create_dir_all(dir)?;
            crate::hsm::pkcs11::write_softhsm2_conf(dir)
                .with_context(|| format!("writing {}", conf.display()))?;
        }
    }
    let so_pin_file = section
        .so_pin_file
        .as_ref()
        .context("init needs hsm.so_pin_file (to initialise the token)")?;
    for file in [so_pin_file, &section.user_pin_file] {
        if ensure_secret_file(file)? {
            tracing::info!(file = %file.display(), "generated a new random PIN");
        }
    }
    let so_pin = config::read_secret_file(so_pin_file)?;
    let user_pin = config::read_secret_file(&section.user_pin_file)?;
    let pkcs11 = pkcs11_config(section);
    Pkcs11Sealer::initialize(&pkcs11, &so_pin, &user_pin)
        .context("initialising the HSM token and sealing key")?;
    // The key share packages of a trusted split are encrypted to (docs/threshold.md).
    crate::hsm::enrolment::ensure_key_pair(&pkcs11, &user_pin)
        .context("creating the enrolment key pair in the HSM")?;
    // The TLS server key and the identity key: generated in the token, sign-only.
    for role in KeyRole::ALL {
        crate::hsm::signing_key::ensure_pkcs11_key(&pkcs11, &user_pin, role)
            .with_context(|| format!("creating the {role} in the HSM"))?;
    }
    Ok(())
}

#[cfg(feature = "yubihsm")]
fn initialize_yubihsm(section: &YubiHsmSection) -> Result<()> {
    let password = yubihsm_password(section)?;
    let yubihsm = yubihsm_config(section);
    YubiHsmSealer::initialize(&yubihsm, &password).with_context(|| {
        format!(
            "creating the sealing key on the YubiHSM2 at {}",
            section.connector
        )
    })?;
    let sealer = YubiHsmSealer::open(&yubihsm, &password)
        .with_context(|| format!("opening the YubiHSM2 at {}", section.connector))?;
    ensure_yubihsm_signing_keys(&sealer)
}

#[cfg(not(feature = "yubihsm"))]
fn initialize_yubihsm(_: &YubiHsmSection) -> Result<()> {
    Err(without_yubihsm_feature())
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

/// The signing path composed from these functions, run with the same bodies over both backends:
/// SoftHSM2 (PKCS#11) and the `yubihsm` crate's mock device (through [`open_sealer_with`]).
#[cfg(all(test, feature = "yubihsm"))]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{KeymanagerSection, SlashingSection, TlsSection};
    use crate::hsm::{SealError, SealedShare};
    use crate::service::ServiceError;
    use crate::store::ShareOrigin;
    use keystake_core::bls::SecretKey;
    use keystake_core::types::{BlsPublicKey, BlsSignature};

    /// A configured data directory and the sealer [`open_sealer`] (or `_with`) gave for it.
    struct TestAppliance {
        _dir: tempfile::TempDir,
        config: Config,
        sealer: Arc<dyn Sealer>,
    }

    fn config_for(dir: &Path, hsm: HsmSection) -> Config {
        Config {
            data_dir: dir.join("data"),
            listen: config::DEFAULT_LISTEN.parse().unwrap(),
            network: "mainnet".into(),
            network_config_file: None,
            tls: TlsSection {
                ca_cert: dir.join("ca.pem"),
                server_cert: dir.join("server.pem"),
                server_key: Some(dir.join("server.key")),
                crl: None,
            },
            hsm,
            client: None,
            policy_file: None,
            allow_any_client: false,
            metrics_listen: None,
            slashing: SlashingSection::default(),
            keymanager: KeymanagerSection::default(),
            sandbox: Default::default(),
            process: Default::default(),
        }
    }

    /// `init` and open on a fresh SoftHSM2 token, PINs generated by `initialize_hsm`.
    fn pkcs11_appliance() -> TestAppliance {
        use crate::hsm::pkcs11::test_support::{ensure_softhsm_env, softhsm_module};
        ensure_softhsm_env();
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(
            dir.path(),
            HsmSection::Pkcs11(Pkcs11Section {
                module: softhsm_module(),
                token_label: format!("app-{:08x}", rand::random::<u32>()),
                key_label: "keystake-sealing-key".into(),
                user_pin_file: dir.path().join("hsm/user.pin"),
                so_pin_file: Some(dir.path().join("hsm/so.pin")),
                // The test process points SOFTHSM2_CONF at its own token directory.
                softhsm2_conf: None,
                sessions: Some(2),
                unseal_cache: None,
            }),
        );
        initialize_hsm(&config).unwrap();
        let sealer = open_sealer(&config).unwrap();
        TestAppliance {
            _dir: dir,
            config,
            sealer,
        }
    }

    fn yubihsm_config(dir: &Path) -> Config {
        config_for(
            dir,
            HsmSection::YubiHsm(YubiHsmSection {
                connector: YubiHsmConnectorSetting::Http {
                    host: "127.0.0.1".into(),
                    // Nothing listens there: only `open_sealer` (without `_with`) uses it.
                    port: 1,
                },
                usb_serial: None,
                timeout_ms: Some(500),
                auth_key_id: crate::hsm::yubihsm::test_support::MOCK_AUTH_KEY_ID,
                password_file: dir.join("hsm/yubihsm.password"),
                key_id: 0x0064,
                key_label: "keystake-sealing-key".into(),
                domain: 1,
                unseal_cache: None,
            }),
        )
    }

    fn write_password(config: &Config) {
        use std::os::unix::fs::PermissionsExt;
        let HsmSection::YubiHsm(section) = &config.hsm else {
            unreachable!()
        };
        std::fs::create_dir_all(section.password_file.parent().unwrap()).unwrap();
        std::fs::write(&section.password_file, "password\n").unwrap();
        std::fs::set_permissions(
            &section.password_file,
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    /// `init` and open on a fresh mock YubiHSM2, with the configured password file.
    fn yubihsm_appliance() -> TestAppliance {
        let dir = tempfile::tempdir().unwrap();
        let config = yubihsm_config(dir.path());
        write_password(&config);
        let device = yubihsm::Connector::mockhsm();
        initialize_hsm_with(&config, device.clone()).unwrap();
        // Idempotent, as `init` is.
        initialize_hsm_with(&config, device.clone()).unwrap();
        let sealer = open_sealer_with(&config, device).unwrap();
        TestAppliance {
            _dir: dir,
            config,
            sealer,
        }
    }

    /// One independent vector: its secret key, request body and expected signature.
    fn vector() -> (SecretKey, Vec<u8>, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/vectors/web3signer/attestation__key0.json");
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let text = |field: &str| case[field].as_str().unwrap().to_owned();
        let secret = SecretKey::from_bytes(
            &hex::decode(text("secret_key").trim_start_matches("0x")).unwrap(),
        )
        .unwrap();
        assert_eq!(secret.public_key().to_hex(), text("pubkey"));
        (
            secret,
            serde_json::to_vec(&case["request"]).unwrap(),
            text("signature"),
        )
    }

    /// The service as `build` composes it (store, sealer, network), without the listener.
    fn service(appliance: &TestAppliance) -> SigningService {
        SigningService::new(
            Arc::new(open_store(&appliance.config).unwrap()),
            appliance.sealer.clone(),
            network(&appliance.config).unwrap(),
        )
        .unwrap()
    }

    /// Sign `body` with `public_key`'s share as the local caller.
    async fn sign_locally(
        service: &SigningService,
        public_key: &BlsPublicKey,
        body: &[u8],
    ) -> Result<crate::service::Signed, ServiceError> {
        service
            .sign_as(
                &crate::service::authz::Caller::local(),
                &public_key.to_hex(),
                body,
            )
            .await
    }

    /// Body: import the vector key (sealed by this backend, stored in SQLite), sign the vector
    /// request through the service, check the signature against the vector.
    async fn signs_the_vector(appliance: &TestAppliance) -> BlsSignature {
        let (secret, body, expected) = vector();
        std::fs::create_dir_all(&appliance.config.data_dir).unwrap();
        let service = service(appliance);
        service
            .import_key(&secret, ShareOrigin::Keystore, None)
            .unwrap();
        let signed = sign_locally(&service, &secret.public_key(), &body)
            .await
            .unwrap();
        assert_eq!(signed.signature.to_hex(), expected);
        assert_eq!(signed.public_key, secret.public_key());
        signed.signature
    }

    /// Body: blobs that must not open reach the signing path and are refused there — a tampered
    /// blob, a blob moved to another key's row (wrong context), a blob of `other`'s backend —
    /// while the good key keeps signing.
    async fn refuses_bad_blobs(appliance: &TestAppliance, other: &dyn Sealer) {
        let store = open_store(&appliance.config).unwrap();
        let key = || SecretKey::random(&mut rand::rngs::OsRng);
        let seal = |sealer: &dyn Sealer, secret: &SecretKey| {
            crate::service::seal_record(sealer, secret, ShareOrigin::Keystore, None).unwrap()
        };

        let tampered_key = key();
        let mut tampered = seal(appliance.sealer.as_ref(), &tampered_key);
        let last = tampered.sealed.len() - 1;
        tampered.sealed[last] ^= 0x01;

        let (sealed_for, moved_to) = (key(), key());
        let mut moved = seal(appliance.sealer.as_ref(), &sealed_for);
        moved.public_key = moved_to.public_key();

        let foreign_key = key();
        let foreign = seal(other, &foreign_key);
        assert_ne!(
            SealedShare(foreign.sealed.clone()).backend().unwrap(),
            SealedShare(tampered.sealed.clone()).backend().unwrap()
        );

        for record in [&tampered, &moved, &foreign] {
            store.insert_share(record).unwrap();
        }
        drop(store);
        let service = service(appliance);
        let (good, body, expected) = vector();
        for (public_key, what) in [
            (tampered.public_key, "tampered"),
            (moved.public_key, "moved"),
            (foreign.public_key, "foreign"),
        ] {
            let refused = sign_locally(&service, &public_key, &body).await;
            match (what, refused) {
                ("tampered" | "moved", Err(ServiceError::Seal(SealError::Integrity))) => {}
                ("foreign", Err(ServiceError::Seal(SealError::MalformedBlob(_)))) => {}
                (what, other) => panic!("{what} blob: got {other:?}"),
            }
        }
        // The sealer is still usable: the good key answers the same request again.
        let again = sign_locally(&service, &good.public_key(), &body)
            .await
            .unwrap();
        assert_eq!(again.signature.to_hex(), expected);
    }

    #[tokio::test]
    async fn both_backends_sign_the_vector_identically() {
        let softhsm = pkcs11_appliance();
        let mock = yubihsm_appliance();
        assert!(softhsm.sealer.describe().starts_with("pkcs11"));
        assert!(mock.sealer.describe().starts_with("yubihsm2"));
        let by_pkcs11 = signs_the_vector(&softhsm).await;
        let by_yubihsm = signs_the_vector(&mock).await;
        assert_eq!(by_pkcs11, by_yubihsm);
    }

    #[tokio::test]
    async fn both_backends_refuse_bad_blobs_on_the_signing_path() {
        let softhsm = pkcs11_appliance();
        let mock = yubihsm_appliance();
        signs_the_vector(&softhsm).await;
        signs_the_vector(&mock).await;
        refuses_bad_blobs(&softhsm, mock.sealer.as_ref()).await;
        refuses_bad_blobs(&mock, softhsm.sealer.as_ref()).await;
    }

    /// `init` creates both signing keys on either backend; `open_signing_key` finds them, they
    /// differ by role, and they sign what the public key verifies.
    #[test]
    fn init_creates_the_signing_keys_on_both_backends() {
        let check = |open: &dyn Fn(KeyRole) -> Arc<dyn HsmSigningKey>| {
            let tls = open(KeyRole::Tls);
            let identity = open(KeyRole::Identity);
            assert_ne!(tls.public_key(), identity.public_key());
            for key in [&tls, &identity] {
                let signature = key.sign_sha256(b"audit head").unwrap();
                assert!(key.public_key().verify_sha256(b"audit head", &signature));
            }
            // Opening again finds the same keys: init did not replace them.
            assert_eq!(open(KeyRole::Tls).public_key(), tls.public_key());
        };
        let softhsm = pkcs11_appliance();
        initialize_hsm(&softhsm.config).unwrap();
        check(&|role| open_signing_key(&softhsm.config, role).unwrap());

        let dir = tempfile::tempdir().unwrap();
        let config = yubihsm_config(dir.path());
        write_password(&config);
        let device = yubihsm::Connector::mockhsm();
        initialize_hsm_with(&config, device.clone()).unwrap();
        initialize_hsm_with(&config, device.clone()).unwrap();
        check(&|role| open_signing_key_with(&config, device.clone(), role).unwrap());
    }

    #[test]
    fn open_sealer_dispatches_to_the_yubihsm_backend() {
        let dir = tempfile::tempdir().unwrap();
        let config = yubihsm_config(dir.path());
        // No password file yet: the error names the setting.
        let error = format!("{:#}", open_sealer(&config).err().unwrap());
        assert!(error.contains("hsm.password_file"), "{error}");
        write_password(&config);
        // Like the PIN files, a password file other users may read is refused.
        let HsmSection::YubiHsm(section) = &config.hsm else {
            unreachable!()
        };
        use std::os::unix::fs::PermissionsExt;
        let shared = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(&section.password_file, shared).unwrap();
        let error = format!("{:#}", open_sealer(&config).err().unwrap());
        assert!(error.contains("chmod 600"), "{error}");
        write_password(&config);
        // The configured connector is used (nothing listens on port 1), not a PKCS#11 module.
        let error = format!("{:#}", open_sealer(&config).err().unwrap());
        assert!(
            error.contains("opening the YubiHSM2 at http://127.0.0.1:1")
                && error.contains("HSM unavailable"),
            "{error}"
        );
        let error = format!("{:#}", initialize_hsm(&config).err().unwrap());
        assert!(error.contains("YubiHSM2 at http://127.0.0.1:1"), "{error}");
        // A PKCS#11 configuration given to the mock entry points is refused, not misread.
        let pkcs11 = config_for(
            dir.path(),
            HsmSection::Pkcs11(Pkcs11Section {
                module: PathBuf::from("/nonexistent.so"),
                token_label: "t".into(),
                key_label: "k".into(),
                user_pin_file: dir.path().join("pin"),
                so_pin_file: None,
                softhsm2_conf: None,
                sessions: None,
                unseal_cache: None,
            }),
        );
        let error = open_sealer_with(&pkcs11, yubihsm::Connector::mockhsm())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("backend = \"pkcs11\""), "{error}");
    }

    /// `split` (the CLI function) to a SoftHSM2 appliance and a mock-YubiHSM2 appliance, then
    /// `keys import-share` (the CLI function) on each, then a partial signature from each:
    /// they combine into the vector's signature by the unsplit key.
    #[tokio::test]
    async fn split_then_import_share_on_softhsm2_and_on_the_yubihsm_mock() {
        use crate::cli::split::{split, SplitArgs};
        use keystake_core::keystore::{self, KdfChoice};
        let softhsm = pkcs11_appliance();
        let dir = tempfile::tempdir().unwrap();
        let config = yubihsm_config(dir.path());
        write_password(&config);
        let device = yubihsm::Connector::mockhsm();
        initialize_hsm_with(&config, device.clone()).unwrap();
        let mock = TestAppliance {
            _dir: dir,
            sealer: open_sealer_with(&config, device.clone()).unwrap(),
            config,
        };
        let mock_key = open_enrolment_key_with(&mock.config, device.clone()).unwrap();
        // `init` again finds the same enrolment key (nothing stored but the HMAC key).
        initialize_hsm_with(&mock.config, device.clone()).unwrap();
        assert_eq!(
            open_enrolment_key_with(&mock.config, device.clone())
                .unwrap()
                .public_key(),
            mock_key.public_key()
        );
        // Another mock device has another enrolment key.
        let other = tempfile::tempdir().unwrap();
        let other_config = yubihsm_config(other.path());
        write_password(&other_config);
        let other_device = yubihsm::Connector::mockhsm();
        initialize_hsm_with(&other_config, other_device.clone()).unwrap();
        let other_key = open_enrolment_key_with(&other_config, other_device).unwrap();
        assert_ne!(other_key.public_key(), mock_key.public_key());

        let work = tempfile::tempdir().unwrap();
        let (secret, body, expected) = vector();
        let password = secrecy::SecretString::from("split-password");
        let store = keystore::encrypt(
            &secret,
            &password,
            KdfChoice::Pbkdf2 { c: 2 },
            &mut rand::rngs::OsRng,
        )
        .unwrap();
        let keystore_path = work.path().join("keystore.json");
        std::fs::write(&keystore_path, serde_json::to_string(&store).unwrap()).unwrap();
        let password_path = work.path().join("password.txt");
        std::fs::write(&password_path, "split-password").unwrap();
        let mut enrolment_files = Vec::new();
        for (name, key) in [
            ("softhsm", enrolment_public_key(&softhsm.config).unwrap()),
            ("mock", mock_key.public_key()),
        ] {
            let path = work.path().join(format!("{name}.enrolment"));
            std::fs::write(&path, format!("{key}\n")).unwrap();
            enrolment_files.push(path);
        }
        let out = work.path().join("split");
        let outcome = split(&SplitArgs {
            keystore: keystore_path,
            password_file: password_path,
            threshold: 2,
            enrolment_keys: enrolment_files,
            out: out.clone(),
        })
        .unwrap();
        let manifest = &outcome.manifest_path;

        for appliance in [&softhsm, &mock] {
            std::fs::create_dir_all(&appliance.config.data_dir).unwrap();
        }
        let on_softhsm =
            crate::cli::keys::import_share(&softhsm.config, &outcome.packages[0], manifest)
                .unwrap();
        let mock_sealer = mock.sealer.clone();
        let import_on_mock = |package: &Path| {
            crate::cli::keys::import_share_using(
                &mock.config,
                package,
                manifest,
                &|checked| open_share_package_with_key(mock_key.as_ref(), checked),
                &|| Ok(mock_sealer.clone()),
            )
        };
        // The SoftHSM2 appliance's package does not open on the mock: refused by address.
        let refused = format!("{:#}", import_on_mock(&outcome.packages[0]).unwrap_err());
        assert!(refused.contains("not for this appliance"), "{refused}");
        let on_mock = import_on_mock(&outcome.packages[1]).unwrap();
        assert_eq!(on_mock.index.get(), 2);
        assert_eq!(on_mock.group_public_key, secret.public_key());
        // And the mock's package does not open on another mock device, even forced past the
        // address check.
        let package: keystake_core::manifest::SharePackage =
            serde_json::from_str(&std::fs::read_to_string(&outcome.packages[1]).unwrap()).unwrap();
        let checked = package.check(Some(&outcome.manifest)).unwrap();
        assert!(matches!(
            crate::hsm::enrolment::decrypt_and_check(other_key.as_ref(), &checked),
            Err(crate::hsm::enrolment::EnrolmentError::Integrity)
        ));

        let mut partials = Vec::new();
        for (appliance, imported) in [(&softhsm, &on_softhsm), (&mock, &on_mock)] {
            let signed = sign_locally(&service(appliance), &imported.public_key, &body)
                .await
                .unwrap();
            partials.push((imported.index, signed.signature));
            assert_ne!(signed.signature.to_hex(), expected);
            partials.sort_by_key(|(index, _)| index.get());
            if partials.len() == 2 {
                let combined = keystake_core::threshold::combine(
                    outcome.manifest.threshold(),
                    &outcome.manifest.share_public_keys(),
                    &outcome.manifest.group_public_key(),
                    signed.signing_root.as_bytes(),
                    &partials,
                    true,
                    &mut rand::rngs::OsRng,
                )
                .unwrap();
                assert_eq!(combined.signature.to_hex(), expected);
            }
        }
    }
}
