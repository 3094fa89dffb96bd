//! `keystake-signer healthcheck`: a container / orchestrator probe. `GET /upcheck` over mutual
//! TLS with the net client (`net::client::MtlsClient`), exit 0 on `200`, 1 otherwise. With
//! `--config`, the CA, the `[client]` certificate and the listen address come from `signer.toml`
//! (a wildcard listen address is probed on loopback); each can be overridden by a flag.
//!
//! Refuses: no CA, client certificate or key (from flags or the configuration), a URL that is
//! not `https`, an answer other than 200 and no answer within `--timeout-secs`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::runtime;
use crate::config::Config;

/// `keystake-signer healthcheck`.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// Take the CA, the client identity (`[client]`) and the address from this configuration.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Base URL of the appliance (default: from the configuration's listen address).
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    #[arg(long)]
    pub cert: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
}

pub fn run(args: HealthcheckArgs) -> Result<()> {
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let from_config = |pick: fn(&Config) -> Option<PathBuf>| config.as_ref().and_then(pick);
    let need = |flag: Option<PathBuf>, pick: fn(&Config) -> Option<PathBuf>, what: &str| {
        flag.or_else(|| from_config(pick))
            .with_context(|| format!("healthcheck needs --{what} (or --config with it)"))
    };
    let ca_cert = need(args.ca_cert, |c| Some(c.tls.ca_cert.clone()), "ca-cert")?;
    let cert = need(
        args.cert,
        |c| c.client.as_ref().map(|s| s.cert.clone()),
        "cert",
    )?;
    let key = need(
        args.key,
        |c| c.client.as_ref().map(|s| s.key.clone()),
        "key",
    )?;
    let url = match (args.url, &config) {
        (Some(url), _) => url,
        (None, Some(config)) => {
            let mut address = config.listen;
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("https://{address}")
        }
        (None, None) => anyhow::bail!("healthcheck needs --url (or --config)"),
    };
    let tls = crate::net::tls::client_config(&ca_cert, &cert, &key)?;
    let client = crate::net::client::MtlsClient::new(tls, &url)?
        .with_timeout(Duration::from_secs(args.timeout_secs));
    let response = runtime()?.block_on(client.request(http::Method::GET, "/upcheck", &[], None))?;
    if response.status != 200 {
        anyhow::bail!("{url}/upcheck answered {}", response.status);
    }
    println!("{url}/upcheck: OK");
    Ok(())
}
