//! `keystake-signer serve --config FILE`: run the appliance — the REST and gRPC APIs on one
//! mutual-TLS port, the optional Prometheus listener — until SIGINT or SIGTERM; SIGHUP re-reads
//! the policy and the CRL (composed by `crate::app`). `--listen` and `--metrics-listen` override
//! the configuration (port 0 picks a free port; the bound addresses are printed).
//!
//! Refuses to start when the configuration does not load, when the configuration file, the data
//! directory, the keymanager token or a PIN file is open to group or others, when the policy file or any TLS file
//! is unusable (the error names the file), when the database belongs to another network, and
//! when an address cannot be bound.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

use super::{load_config, serving_runtime};
use crate::config::Config;

/// `keystake-signer serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// Override the configured listen address (port 0 picks a free port; the bound address is logged).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Serve Prometheus metrics on this address (overrides metrics_listen; port 0 allowed).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let config = load_config(&args.config)?;
    crate::app::check_private_files(&args.config, &config)?;
    serving_runtime(&config)?.block_on(crate::app::serve(
        &config,
        crate::app::Listen {
            api: args.listen,
            metrics: args.metrics_listen,
        },
    ))
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
