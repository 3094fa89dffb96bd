//! CLI commands for authorization and audit: issuing further client certificates from an
//! existing CA, revocation lists, checking a policy file, verifying and exporting the audit log.
//! The binary only parses arguments and calls these.
//!
//! Refuses: issuing into a directory that already holds the client's files, CA directories
//! without `ca.pem` + `ca.key`, invalid client names, policy files that do not parse, and (as a
//! failed command naming the first entry at fault) an audit log whose chain is broken.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::DEMO_CERT_VALIDITY_DAYS;
use crate::config::Config;
use crate::net::pki::{self as certs, IssuedCert, Overwrite};
use keystake_core::audit;
use keystake_core::policy::{KeySelector, Policy};

/// `certs generate --out DIR --ca-dir CA --client NAME…`: more client certificates from an
/// existing CA, written as `DIR/NAME.pem` and `DIR/NAME.key`.
pub fn issue_clients(ca_dir: &Path, out: &Path, clients: &[String]) -> Result<Vec<IssuedCert>> {
    if clients.is_empty() {
        anyhow::bail!(
            "name at least one --client to issue from {}",
            ca_dir.display()
        );
    }
    clients
        .iter()
        .map(|client| {
            certs::issue_client(
                ca_dir,
                out,
                client,
                DEMO_CERT_VALIDITY_DAYS,
                Overwrite::Refuse,
            )
            .with_context(|| format!("issuing client certificate {client:?}"))
        })
        .collect()
}

/// `certs revoke --ca-dir CA --cert X.pem… --out crl.pem`: a CRL revoking those certificates
/// (replaces `out`; point `tls.crl` at it and reload with SIGHUP or the admin call).
pub fn revoke(ca_dir: &Path, revoked: &[std::path::PathBuf], out: &Path) -> Result<()> {
    certs::write_crl(ca_dir, revoked, out, CRL_VALIDITY_DAYS, Overwrite::Replace)
        .with_context(|| format!("writing CRL {}", out.display()))?;
    Ok(())
}

/// `nextUpdate` of generated CRLs (not enforced by the appliance, see `crate::net::tls`).
pub const CRL_VALIDITY_DAYS: u32 = 30;

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
