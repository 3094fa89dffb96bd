//! `keystake-signer audit verify|export`: the tamper-evident audit log (docs/audit.md).
//! `verify` walks the whole hash chain and prints the head (`SEQ:HASH`) to keep elsewhere;
//! `export` writes every entry as one JSON line, to standard output or `--out FILE`.
//!
//! `export --signed-head FILE` also writes the chain head signed by the appliance's identity key
//! in the HSM (issue 17); `verify --signed-head FILE` checks such a file: the signature, that the
//! key is this appliance's identity key, and that the chain still holds that entry unchanged. A
//! rewrite of the whole chain (every hash recomputed) passes a plain `verify` but not this one,
//! and without the HSM nobody can sign a head for the rewritten chain.
//!
//! Refuses (as a failed command naming the first entry at fault): an audit log whose chain is
//! broken, or that no longer holds the `--expect-head` / `--signed-head` entry unchanged; a
//! `--expect-head` that is not `SEQ:SHA256HEX`; a signed head whose signature does not verify or
//! that another key signed; signing the head of a broken chain. Export itself does not verify: an
//! export of a broken chain is still useful evidence.
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
        /// A head file written by `export --signed-head`: its signature must verify under this
        /// appliance's identity key, and that entry must still be there unchanged.
        #[arg(long)]
        signed_head: Option<PathBuf>,
    },
    /// Write every audit entry as JSON lines (to stdout, or --out FILE).
    Export {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the chain head, signed by the identity key in the HSM, to this file.
        #[arg(long)]
        signed_head: Option<PathBuf>,
    },
}

/// A chain head signed by the appliance's identity key (`export --signed-head`), as JSON.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHeadFile {
    /// `SEQ:SHA256HEX`, as `verify` prints it.
    pub head: String,
    /// The identity public key, uncompressed SEC1, hex.
    pub identity_key: String,
    /// ECDSA P-256 `r || s` over SHA-256 of `audit::head_statement(head)`, hex.
    pub signature: String,
}

pub fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify {
            config,
            expect_head,
            signed_head,
        } => {
            let config = load_config(&config)?;
            verify_audit(
                &config,
                expect_head.as_deref(),
                &mut std::io::stdout().lock(),
            )?;
            if let Some(path) = signed_head {
                let head = verify_signed_head(&config, &path)?;
                println!("signed head {head} verified: signed by this appliance's identity key, entry unchanged");
            }
        }
        AuditCommand::Export {
            config,
            out,
            signed_head,
        } => {
            let config = load_config(&config)?;
            if let Some(path) = &signed_head {
                let head = sign_head(&config, path)?;
                eprintln!(
                    "head {head} signed by the identity key, written to {}",
                    path.display()
                );
            }
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

/// `export --signed-head`: sign the head of the (intact) chain with the identity key in the HSM
/// and write it to `path`. Refuses a broken chain: a signature would vouch for a rewrite.
pub fn sign_head(config: &Config, path: &std::path::Path) -> Result<audit::Head> {
    let store = crate::app::open_store(config)?;
    let entries = store.audit_entries()?;
    let head = audit::verify(&entries).map_err(|broken| {
        anyhow::anyhow!(
            "audit log {} is NOT intact at entry {}: {broken}; refusing to sign its head",
            store.path().display(),
            broken.seq()
        )
    })?;
    let key = crate::app::open_signing_key(config, crate::hsm::signing_key::KeyRole::Identity)?;
    let signature = key.sign_sha256(&audit::head_statement(&head))?;
    let file = SignedHeadFile {
        head: head.to_string(),
        identity_key: hex::encode(key.public_key().as_sec1()),
        signature: hex::encode(signature.as_bytes()),
    };
    let mut text = serde_json::to_string_pretty(&file)?;
    text.push('\n');
    crate::files::write_file(
        path,
        text.as_bytes(),
        crate::files::PUBLIC_FILE_MODE,
        crate::files::Overwrite::Replace,
    )?;
    Ok(head)
}

/// `verify --signed-head`: the signature verifies under the key named in the file, that key is
/// this appliance's identity key, and the chain still holds the signed entry unchanged.
pub fn verify_signed_head(config: &Config, path: &std::path::Path) -> Result<audit::Head> {
    use crate::hsm::signing_key::{EcdsaSignature, KeyRole, P256PublicKey, SIGNATURE_LEN};
    let file: SignedHeadFile = super::read_json(path, "signed audit head")?;
    let bad = |what: &str| anyhow::anyhow!("signed head {}: {what}", path.display());
    let head = audit::parse_head(&file.head).ok_or_else(|| bad("head is not SEQ:SHA256HEX"))?;
    let key = hex::decode(&file.identity_key)
        .ok()
        .and_then(|bytes| P256PublicKey::from_sec1(&bytes))
        .ok_or_else(|| bad("identity_key is not an uncompressed P-256 point in hex"))?;
    let signature: [u8; SIGNATURE_LEN] = hex::decode(&file.signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| bad("signature is not 64 bytes of hex"))?;
    if !key.verify_sha256(
        &audit::head_statement(&head),
        &EcdsaSignature::from_bytes(signature),
    ) {
        return Err(bad("the signature does not verify (forged or edited head)"));
    }
    let identity = crate::app::open_signing_key(config, KeyRole::Identity)?;
    if identity.public_key() != &key {
        return Err(bad(
            "signed by another key than this appliance's identity key",
        ));
    }
    let store = crate::app::open_store(config)?;
    let entries = store.audit_entries()?;
    audit::verify_head(&entries, head).map_err(|broken| {
        anyhow::anyhow!(
            "audit log {} is NOT intact: {broken} (the signed head {head} is no longer in the chain: rewritten)",
            store.path().display()
        )
    })?;
    Ok(head)
}
