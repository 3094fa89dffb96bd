//! `keystake-signer audit verify|export`: the tamper-evident audit log (docs/audit.md).
//! `verify` walks the whole hash chain and prints the head (`SEQ:HASH`) to keep elsewhere;
//! `export` writes every entry as one JSON line, to standard output or `--out FILE`.
//!
//! Refuses (as a failed command naming the first entry at fault): an audit log whose chain is
//! broken, or that no longer holds the `--expect-head` entry unchanged; a `--expect-head` that
//! is not `SEQ:SHA256HEX`. Export does not verify: an export of a broken chain is still useful
//! evidence.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::load_config;
use crate::config::Config;
use keystake_core::audit;

/// `keystake-signer audit …`.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the audit log; exits non-zero and names the first bad entry.
    Verify {
        #[arg(long)]
        config: PathBuf,
        /// A head printed by an earlier verify (SEQ:HASH): that entry must still be there.
        #[arg(long)]
        expect_head: Option<String>,
    },
    /// Write every audit entry as JSON lines (to stdout, or --out FILE).
    Export {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify {
            config,
            expect_head,
        } => {
            verify_audit(
                &load_config(&config)?,
                expect_head.as_deref(),
                &mut std::io::stdout().lock(),
            )?;
        }
        AuditCommand::Export { config, out } => {
            let config = load_config(&config)?;
            match out {
                Some(path) => {
                    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                    let n = export_audit(&config, &mut file)?;
                    eprintln!("{n} audit entries written to {}", path.display());
                }
                None => {
                    export_audit(&config, &mut std::io::stdout().lock())?;
                }
            }
        }
    }
    Ok(())
}

/// `audit verify`: walk the whole chain; succeed only if it is intact (and, with
/// `expect_head`, still contains that entry unchanged). Prints the head to keep elsewhere.
pub fn verify_audit(
    config: &Config,
    expect_head: Option<&str>,
    out: &mut dyn Write,
) -> Result<audit::Head> {
    let store = crate::app::open_store(config)?;
    let entries = store.audit_entries()?;
    let head = audit::verify(&entries).map_err(|broken| {
        anyhow::anyhow!(
            "audit log {} is NOT intact at entry {}: {broken}",
            store.path().display(),
            broken.seq()
        )
    })?;
    if let Some(text) = expect_head {
        let expected = audit::parse_head(text)
            .with_context(|| format!("--expect-head {text:?}: expected SEQ:SHA256HEX"))?;
        audit::verify_head(&entries, expected).map_err(|broken| {
            anyhow::anyhow!(
                "audit log {} is NOT intact: {broken}",
                store.path().display()
            )
        })?;
    }
    writeln!(
        out,
        "audit log intact: {} entries, head {head}",
        entries.len()
    )?;
    Ok(head)
}

/// `audit export`: every entry as one JSON object per line, in sequence order (verification is
/// separate: an export of a broken chain is still useful evidence).
pub fn export_audit(config: &Config, out: &mut dyn Write) -> Result<usize> {
    let store = crate::app::open_store(config)?;
    let entries = store.audit_entries()?;
    for entry in &entries {
        serde_json::to_writer(&mut *out, entry)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(entries.len())
}
