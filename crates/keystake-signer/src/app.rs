//! `serve`: composes the running appliance — store, HSM, signing service with its authorization
//! policy, the mutual-TLS listener (REST and gRPC on one port), the optional Prometheus
//! listener — and runs it until SIGINT/SIGTERM. SIGHUP re-reads the policy file and the CRL.
//!
//! Refuses to start when the policy file or any TLS file is unusable (the error names the file).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::cli as commands;
use crate::config::Config;
use crate::net::listen::{self as api, TlsReloader};
use crate::net::tls::TlsFiles;
use crate::service::authz::Authorizer;
use crate::service::SigningService;

/// Where to listen, overriding the configuration (tests use port 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Listen {
    pub api: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// The parts of a running appliance, before it serves.
pub struct Appliance {
    pub service: Arc<SigningService>,
    pub tls: Arc<TlsReloader>,
    pub listener: tokio::net::TcpListener,
}

/// Open everything the configuration names and bind the API listener.
pub async fn build(config: &Config, listen: Listen) -> Result<Appliance> {
    let network = commands::network(config)?;
    let authorizer = Arc::new(Authorizer::from_config(config.policy_file.as_deref())?);
    let store = Arc::new(commands::slashing::open_store(config)?);
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
    let sealer = commands::open_sealer(config)?;
    let service =
        Arc::new(SigningService::new(store, sealer, network)?.with_authorizer(authorizer.clone()));
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
            service.clone(),
        ));
    }
    let token = crate::service::keymanager::BearerToken::load(&config.keymanager_token_path())?;
    let keymanager = Arc::new(crate::service::keymanager::Keymanager::new(
        service.clone(),
        token,
    ));
    let app = api::app(service, crate::net::rest::keymanager::router(keymanager));
    api::serve_mtls_reloadable(
        appliance.listener,
        appliance.tls,
        app,
        commands::shutdown_signal(),
    )
    .await;
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
