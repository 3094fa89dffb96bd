//! `keystake-signer connect`: run on the validator-client host; accept plain HTTP on a loopback
//! address and forward each request to the appliance over mutual TLS with this host's client
//! certificate (for clients without client certificates, e.g. Lodestar; `crate::forwarder`,
//! docs/clients.md). Runs until SIGINT or SIGTERM.
//!
//! Refuses: a listen address that is not loopback (unless `--allow-non-loopback`, with a loud
//! warning), client identity or CA files that do not load, and what the forwarder refuses per
//! request (oversized bodies, non-ASCII header values).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

use super::runtime;
use crate::forwarder::{self, ForwarderOptions};

/// `keystake-signer connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Loopback address to accept plain HTTP on (port 0 picks a free port; it is printed).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The appliance, e.g. https://signer.example:9000
    #[arg(long)]
    pub upstream: String,
    /// This host's client certificate (PEM), issued by the appliance's CA.
    #[arg(long)]
    pub client_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    pub client_key: PathBuf,
    /// CA certificate (PEM) the appliance's server certificate must chain to.
    #[arg(long)]
    pub ca: PathBuf,
    /// Allow a non-loopback listen address (exposes unauthenticated signing; loud warning).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Upper bound on one upstream exchange, in seconds.
    #[arg(long, default_value_t = forwarder::DEFAULT_UPSTREAM_TIMEOUT.as_secs())]
    pub timeout_secs: u64,
}

pub fn run(args: ConnectArgs) -> Result<()> {
    let options = ForwarderOptions {
        listen: args.listen,
        upstream: args.upstream,
        ca: args.ca,
        client_cert: args.client_cert,
        client_key: args.client_key,
        allow_non_loopback: args.allow_non_loopback,
        timeout: std::time::Duration::from_secs(args.timeout_secs.max(1)),
    };
    runtime()?.block_on(forwarder::run(&options, crate::app::shutdown_signal()))?;
    Ok(())
}
