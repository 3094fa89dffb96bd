//! `keystake-signer init --config FILE`: the data directory (mode 0700), the SQLite store, the
//! HSM objects (SoftHSM2 configuration and random PIN files when missing, the token with its
//! sealing key, the enrolment key pair) and the keymanager API token file. Idempotent: what
//! exists is kept.
//!
//! Refuses: a configuration that does not load, one without `hsm.so_pin_file`, a database that
//! does not open, an HSM token that cannot be initialised, and an existing keymanager token file
//! that holds no valid token.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Result;

use super::load_config;
use crate::config::Config;

/// `keystake-signer init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    pub config: PathBuf,
}

pub fn run(args: InitArgs) -> Result<()> {
    init(&load_config(&args.config)?)
}

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
