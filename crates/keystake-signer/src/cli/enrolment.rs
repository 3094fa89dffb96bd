//! `keystake-signer enrolment show --config FILE`: print this appliance's enrolment public key,
//! the HSM-held P-256 key that share packages from `split` are encrypted to (one line; give the
//! file to `split`, docs/threshold.md). The private half never leaves the HSM.
//!
//! Refuses: a configuration that does not load, an unreadable user PIN file, and an HSM token
//! without the enrolment key pair (run `init` first).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Result;

use super::load_config;
use crate::config::Config;
use keystake_core::manifest::EnrolmentPublicKey;

/// `keystake-signer enrolment …`.
#[derive(Debug, clap::Subcommand)]
pub enum EnrolmentCommand {
    /// Print this appliance's enrolment public key (one line; give the file to `split`).
    Show {
        #[arg(long)]
        config: PathBuf,
    },
}

pub fn run(command: EnrolmentCommand) -> Result<()> {
    match command {
        EnrolmentCommand::Show { config } => {
            println!("{}", enrolment_show(&load_config(&config)?)?);
        }
    }
    Ok(())
}

/// `enrolment show`: the enrolment public key line.
pub fn enrolment_show(config: &Config) -> Result<EnrolmentPublicKey> {
    crate::app::enrolment_public_key(config)
}
