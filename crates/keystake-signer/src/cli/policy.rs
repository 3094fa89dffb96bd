//! `keystake-signer policy check --policy FILE`: parse an authorization policy file
//! (docs/authorization.md) and print what it grants, client by client.
//!
//! Refuses: a policy file that cannot be read or does not parse (the error says where).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use keystake_core::policy::{KeySelector, Policy};

/// `keystake-signer policy …`.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Parse an authorization policy file and print what it grants.
    Check {
        #[arg(long)]
        policy: PathBuf,
    },
}

pub fn run(command: PolicyCommand) -> Result<()> {
    match command {
        PolicyCommand::Check { policy } => check_policy(&policy, &mut std::io::stdout().lock()),
    }
}

/// `policy check --policy FILE`: parse a policy and print what it grants.
pub fn check_policy(path: &Path, out: &mut dyn Write) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let policy =
        Policy::from_toml_str(&text).with_context(|| format!("policy {}", path.display()))?;
    writeln!(
        out,
        "{}: {} client(s)",
        path.display(),
        policy.clients.len()
    )?;
    for client in &policy.clients {
        writeln!(out, "  {}", client.matcher)?;
        if client.grants.is_empty() {
            writeln!(out, "    (no grants: refused everything)")?;
        }
        for grant in &client.grants {
            let keys = match &grant.keys {
                KeySelector::All => "all keys".to_owned(),
                KeySelector::Keys(keys) => format!("{} key(s)", keys.len()),
                KeySelector::Groups(groups) => format!("{} group(s)", groups.len()),
            };
            let ops: Vec<&str> = grant.operations.iter().map(|o| o.as_str()).collect();
            writeln!(out, "    {keys}: {}", ops.join(", "))?;
        }
    }
    Ok(())
}
