//! `keystake-signer connect`: run on the validator-client host; accept plain HTTP on a loopback
//! address and forward each request to the appliance over mutual TLS with this host's client
//! certificate (for clients without client certificates, e.g. Lodestar; `crate::forwarder`,
//! docs/clients.md). Runs until SIGINT or SIGTERM.
//!
//! With `--cluster cluster.toml` it is the threshold forwarder instead
//! (`crate::forwarder::threshold`, docs/threshold.md): one endpoint for the group keys of a t-of-n
//! cluster, combining partial signatures from the appliances the cluster file names.
//!
//! Refuses: a listen address that is not loopback (unless `--allow-non-loopback`, with a loud
//! warning), client identity or CA files that do not load, and what the forwarder refuses per
//! request (oversized bodies, non-ASCII header values).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

use super::runtime;
use crate::forwarder::threshold::ClusterOptions;
use crate::forwarder::{self, ForwarderOptions};

/// `keystake-signer connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Loopback address to accept plain HTTP on (port 0 picks a free port; it is printed).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Threshold forwarder: the cluster file (manifests and one [[appliance]] per share index).
    #[arg(long, conflicts_with_all = ["upstream", "client_cert", "client_key", "ca"])]
    pub cluster: Option<PathBuf>,
    /// The appliance, e.g. https://signer.example:9000
    #[arg(long, required_unless_present = "cluster")]
    pub upstream: Option<String>,
    /// This host's client certificate (PEM), issued by the appliance's CA.
    #[arg(long, required_unless_present = "cluster")]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, required_unless_present = "cluster")]
    pub client_key: Option<PathBuf>,
    /// CA certificate (PEM) the appliance's server certificate must chain to.
    #[arg(long, required_unless_present = "cluster")]
    pub ca: Option<PathBuf>,
    /// Allow a non-loopback listen address (exposes unauthenticated signing; loud warning).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Upper bound on one upstream exchange, in seconds (with --cluster: the deadline of one
    /// signing request, retries included).
    #[arg(long, default_value_t = forwarder::DEFAULT_UPSTREAM_TIMEOUT.as_secs())]
    pub timeout_secs: u64,
}

pub fn run(args: ConnectArgs) -> Result<()> {
    let timeout = std::time::Duration::from_secs(args.timeout_secs.max(1));
    if let Some(cluster) = args.cluster {
        let options = ClusterOptions {
            listen: args.listen,
            cluster,
            allow_non_loopback: args.allow_non_loopback,
            timeout,
        };
        runtime()?.block_on(forwarder::threshold::run(
            &options,
            crate::app::shutdown_signal(),
        ))?;
        return Ok(());
    }
    let missing = |name: &str| anyhow::anyhow!("--{name} is required without --cluster");
    let options = ForwarderOptions {
        listen: args.listen,
        upstream: args.upstream.ok_or_else(|| missing("upstream"))?,
        ca: args.ca.ok_or_else(|| missing("ca"))?,
        client_cert: args.client_cert.ok_or_else(|| missing("client-cert"))?,
        client_key: args.client_key.ok_or_else(|| missing("client-key"))?,
        allow_non_loopback: args.allow_non_loopback,
        timeout,
    };
    runtime()?.block_on(forwarder::run(&options, crate::app::shutdown_signal()))?;
    Ok(())
}
