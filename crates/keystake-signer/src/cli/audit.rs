//! `keystake-signer audit verify|export|prune`: the tamper-evident audit log (docs/audit.md).
//! `verify` walks the whole hash chain and prints the head (`SEQ:HASH`) to keep elsewhere;
//! `export` writes every entry as one JSON line, to standard output or `--out FILE`.
//!
//! `export --signed-head FILE` also writes the chain head signed by the appliance's identity key
//! in the HSM (issue 17); `verify --signed-head FILE` checks such a file: the signature, that the
//! key is this appliance's identity key, and that the chain still holds that entry unchanged. A
//! rewrite of the whole chain (every hash recomputed) passes a plain `verify` but not this one,
//! and without the HSM nobody can sign a head for the rewritten chain.
//!
//! `prune` bounds the log: it writes the entries older than a cut to an archive file (JSON lines,
//! as `export` writes them; fsynced before anything is removed), stores the head of the last one
//! as the log's **anchor**, signed by the identity key, and then deletes them in short paced
//! transactions (safe while `serve` runs). From then on `verify` checks the anchor's signature
//! against the identity key and the chain from the anchor; `verify --archive FILE…` checks the
//! archives from the first entry ever written up to the anchor, and the database after it, as
//! one chain. Removing old entries without the HSM cannot be hidden: the anchor would not verify.
//!
//! Refuses (as a failed command naming the first entry at fault): an audit log whose chain is
//! broken, or that no longer holds the `--expect-head` / `--signed-head` entry unchanged (or, for
//! a pruned entry, whose archive is not given); a `--expect-head` that is not `SEQ:SHA256HEX`; a
//! signed head or stored anchor whose signature does not verify or that another key signed;
//! signing the head of a broken chain; pruning a broken chain (it is evidence), pruning the
//! newest entry (the chain continues from it), and an archive path that exists. Export itself
//! does not verify: an export of a broken chain is still useful evidence.
#![forbid(unsafe_code)]

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::load_config;
use crate::config::Config;
use crate::hsm::signing_key::{EcdsaSignature, KeyRole, P256PublicKey, SIGNATURE_LEN};
use crate::store::audit::AuditSnapshot;
use crate::store::Store;
use keystake_core::audit::{self, ChainVerifier, Entry, Head, SignedHead};

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
        /// Archives written by `audit prune`, oldest first: checked with the database as one
        /// chain from the first entry ever written.
        #[arg(long)]
        archive: Vec<PathBuf>,
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
    /// Move the entries older than a cut to an archive file and remove them from the database,
    /// under an anchor signed by the identity key (safe while `serve` runs).
    Prune {
        #[arg(long)]
        config: PathBuf,
        /// The archive to write (JSON lines, as `export`); must not exist.
        #[arg(long)]
        archive: PathBuf,
        /// Keep the entries of the last D days (by their time); the newest entry always stays.
        #[arg(
            long,
            conflicts_with = "before_seq",
            required_unless_present = "before_seq"
        )]
        keep_days: Option<u64>,
        /// Remove the entries before this sequence number; the newest entry always stays.
        #[arg(long)]
        before_seq: Option<u64>,
    },
}

pub fn run(command: AuditCommand) -> Result<()> {
    match command {
        AuditCommand::Verify {
            config,
            expect_head,
            signed_head,
            archive,
        } => {
            let config = load_config(&config)?;
            let mut expected = Vec::new();
            if let Some(text) = &expect_head {
                expected.push(
                    audit::parse_head(text).with_context(|| {
                        format!("--expect-head {text:?}: expected SEQ:SHA256HEX")
                    })?,
                );
            }
            let signed = match &signed_head {
                Some(path) => Some(read_signed_head(&config, path)?),
                None => None,
            };
            expected.extend(signed);
            let verified =
                verify_audit(&config, &archive, &expected, &mut std::io::stdout().lock())?;
            if let Some(head) = signed {
                if archive.is_empty() && verified.anchor == Some(head) {
                    println!(
                        "signed head {head} verified: signed by this appliance's identity key; it is the log's signed anchor (the entries up to it are archived)"
                    );
                } else {
                    println!(
                        "signed head {head} verified: signed by this appliance's identity key, entry unchanged"
                    );
                }
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
        AuditCommand::Prune {
            config,
            archive,
            keep_days,
            before_seq,
        } => {
            let config = load_config(&config)?;
            let cut = match (keep_days, before_seq) {
                (_, Some(seq)) => Cut::BeforeSeq(seq),
                (Some(days), None) => {
                    Cut::OlderThanMs(now_ms().saturating_sub(days.saturating_mul(86_400_000)))
                }
                (None, None) => anyhow::bail!("give --keep-days or --before-seq"),
            };
            let summary = prune_audit(&config, &archive, cut)?;
            if summary.archived == 0 {
                print!("nothing to prune: no entry older than the cut but the newest, which always stays; no archive written");
                if summary.removed > 0 {
                    print!(
                        " (deleted {} entries an interrupted prune had archived)",
                        summary.removed
                    );
                }
                println!();
            } else {
                println!(
                    "archived {} audit entries ({}..={}) into {} and deleted {} from the database; the log now starts after the signed anchor {}",
                    summary.archived,
                    summary.first,
                    summary.anchor.seq,
                    archive.display(),
                    summary.removed,
                    summary.anchor
                );
            }
        }
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The head a stored or given signed head vouches for, if its signature verifies under
/// `identity` (the key this appliance holds in its HSM, never the key the file names alone).
fn check_signed_head(
    signed: &SignedHead,
    statement: fn(&Head) -> Vec<u8>,
    identity: &P256PublicKey,
    what: &str,
) -> Result<Head> {
    let bad = |why: &str| anyhow::anyhow!("{what}: {why}");
    let head = audit::parse_head(&signed.head).ok_or_else(|| bad("head is not SEQ:SHA256HEX"))?;
    let key = hex::decode(&signed.identity_key)
        .ok()
        .and_then(|bytes| P256PublicKey::from_sec1(&bytes))
        .ok_or_else(|| bad("identity_key is not an uncompressed P-256 point in hex"))?;
    let signature: [u8; SIGNATURE_LEN] = hex::decode(&signed.signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| bad("signature is not 64 bytes of hex"))?;
    if !key.verify_sha256(&statement(&head), &EcdsaSignature::from_bytes(signature)) {
        return Err(bad("the signature does not verify (forged or edited head)"));
    }
    if &key != identity {
        return Err(bad(
            "signed by another key than this appliance's identity key",
        ));
    }
    Ok(head)
}

fn identity_key(config: &Config) -> Result<P256PublicKey> {
    Ok(*crate::app::open_signing_key(config, KeyRole::Identity)?.public_key())
}

/// `verify --signed-head FILE`: the head it vouches for, its signature checked against this
/// appliance's identity key.
fn read_signed_head(config: &Config, path: &Path) -> Result<Head> {
    let signed: SignedHead = super::read_json(path, "signed audit head")?;
    check_signed_head(
        &signed,
        audit::head_statement,
        &identity_key(config)?,
        &format!("signed head {}", path.display()),
    )
}

/// The stored anchor's head, its signature checked against the identity key; [`Head::EMPTY`]
/// for a log never pruned (no HSM needed then).
fn checked_anchor(config: &Config, stored: Option<&SignedHead>) -> Result<Head> {
    match stored {
        None => Ok(Head::EMPTY),
        Some(signed) => check_signed_head(
            signed,
            audit::anchor_statement,
            &identity_key(config)?,
            "the stored audit anchor (older entries removed without the identity key?)",
        ),
    }
}

/// The longest line an archive may have: an entry is under 4 KB (its strings are bounded when
/// recorded, docs/security.md), so anything longer is not one, and is not read into memory.
const MAX_ARCHIVE_LINE_BYTES: u64 = 64 * 1024;

/// What [`verify_audit`] found intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub head: Head,
    /// Entries checked in the database (after the anchor).
    pub entries: u64,
    /// Entries checked in the archives.
    pub archived: u64,
    /// The stored anchor, when the log was pruned.
    pub anchor: Option<Head>,
}

/// Where a chain breaks, as the command's error.
fn broken(store: &Store, broken: audit::Broken) -> anyhow::Error {
    anyhow::anyhow!(
        "audit log {} is NOT intact at entry {}: {broken}",
        store.path().display(),
        broken.seq()
    )
}

/// `audit verify`: the archives (oldest first, from the first entry ever written) up to the
/// stored anchor, then the database after it, as one chain; the anchor's signature against the
/// identity key; every `expected` head still there unchanged. Prints the head to keep elsewhere.
pub fn verify_audit(
    config: &Config,
    archives: &[PathBuf],
    expected: &[Head],
    out: &mut dyn Write,
) -> Result<Verified> {
    let store = crate::app::open_store(config)?;
    let mut found = vec![false; expected.len()];
    let mut mark = |entry: &Entry| {
        for (i, head) in expected.iter().enumerate() {
            if head.seq == entry.seq && head.hash == entry.hash {
                found[i] = true;
            }
        }
    };
    let mut chain = ChainVerifier::new(Head::EMPTY);
    let mut archived = 0u64;
    for path in archives {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening the audit archive {}", path.display()))?;
        let mut reader = std::io::BufReader::new(file);
        let mut line = String::new();
        for line_number in 1.. {
            line.clear();
            let read = (&mut reader)
                .take(MAX_ARCHIVE_LINE_BYTES + 1)
                .read_line(&mut line)
                .with_context(|| format!("reading {}", path.display()))?;
            if read == 0 {
                break;
            }
            if read as u64 > MAX_ARCHIVE_LINE_BYTES {
                anyhow::bail!(
                    "{} line {line_number}: longer than {MAX_ARCHIVE_LINE_BYTES} bytes, not an audit entry",
                    path.display()
                );
            }
            let entry: Entry = serde_json::from_str(&line).with_context(|| {
                format!("{} line {line_number}: not an audit entry", path.display())
            })?;
            chain.push(&entry).map_err(|fault| {
                anyhow::anyhow!(
                    "audit archive {} is NOT intact at entry {}: {fault}",
                    path.display(),
                    fault.seq()
                )
            })?;
            mark(&entry);
            archived += 1;
        }
    }
    let (entries, anchor) = store.read_audit(|snapshot| -> Result<_> {
        let stored = snapshot.anchor()?;
        let anchor = checked_anchor(config, stored.as_ref())?;
        if archives.is_empty() {
            chain = ChainVerifier::new(anchor);
        } else if stored.is_none() {
            anyhow::bail!(
                "the archives end at {} but this log was never pruned (it starts at entry 1): they belong to another log",
                chain.head()
            );
        } else if chain.head() != anchor {
            anyhow::bail!(
                "the archives end at {} but the database continues after the anchor {anchor}: an archive is missing or out of order",
                chain.head()
            );
        }
        let mut entries = 0u64;
        snapshot.for_each(anchor.seq, &mut |entry| -> Result<()> {
            chain.push(&entry).map_err(|fault| broken(&store, fault))?;
            mark(&entry);
            entries += 1;
            Ok(())
        })?;
        Ok((entries, stored.map(|_| anchor)))
    })?;
    let head = chain.head();
    for (head_expected, found) in expected.iter().zip(&found) {
        if *found || anchor == Some(*head_expected) {
            continue;
        }
        if let Some(anchor) = anchor.filter(|a| head_expected.seq < a.seq && archives.is_empty()) {
            anyhow::bail!(
                "audit log {}: entry {} was pruned (the log starts after the signed anchor {anchor}); pass the archive that holds it with --archive",
                store.path().display(),
                head_expected.seq
            );
        }
        let mismatch = audit::Broken::HeadMismatch {
            expected: *head_expected,
            actual: head,
        };
        anyhow::bail!(
            "audit log {} is NOT intact: {mismatch} (that entry is no longer in the chain: rewritten)",
            store.path().display()
        );
    }
    let verified = Verified {
        head,
        entries,
        archived,
        anchor,
    };
    match (anchor, archived) {
        (None, 0) => writeln!(out, "audit log intact: {entries} entries, head {head}")?,
        (Some(anchor), 0) => writeln!(
            out,
            "audit log intact: {entries} entries after the signed anchor {anchor} (older entries pruned), head {head}"
        )?,
        _ => writeln!(
            out,
            "audit log intact: {} entries ({archived} in archives), head {head}",
            archived + entries
        )?,
    }
    Ok(verified)
}

/// `audit export`: every entry the database holds (after the anchor of a pruned log) as one JSON
/// object per line, in sequence order, streamed from one snapshot (verification is separate: an
/// export of a broken chain is still useful evidence).
pub fn export_audit(config: &Config, out: &mut dyn Write) -> Result<u64> {
    let store = crate::app::open_store(config)?;
    let count = store.read_audit(|snapshot| -> Result<u64> {
        let after = audit_anchor_seq(snapshot)?;
        write_entries(snapshot, after, u64::MAX, out)
    })?;
    out.flush()?;
    Ok(count)
}

/// Where the entries of a snapshot start: after the stored anchor (unchecked; `verify` checks
/// it), so the leftovers of an interrupted prune are not exported again.
fn audit_anchor_seq(snapshot: &AuditSnapshot<'_>) -> Result<u64> {
    Ok(match snapshot.anchor()? {
        Some(signed) => audit::parse_head(&signed.head).map_or(0, |head| head.seq),
        None => 0,
    })
}

/// The entries with `after < seq <= through` as JSON lines; how many.
fn write_entries(
    snapshot: &AuditSnapshot<'_>,
    after: u64,
    through: u64,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut count = 0u64;
    snapshot.for_each(after, &mut |entry| -> Result<()> {
        if entry.seq <= through {
            serde_json::to_writer(&mut *out, &entry)?;
            writeln!(out)?;
            count += 1;
        }
        Ok(())
    })?;
    Ok(count)
}

/// `export --signed-head`: sign the head of the (intact) chain with the identity key in the HSM
/// and write it to `path`. Refuses a broken chain: a signature would vouch for a rewrite.
pub fn sign_head(config: &Config, path: &Path) -> Result<Head> {
    let verified = verify_audit(config, &[], &[], &mut std::io::sink())
        .context("refusing to sign the head of the audit log")?;
    let file = signed(config, verified.head, audit::head_statement)?;
    let mut text = serde_json::to_string_pretty(&file)?;
    text.push('\n');
    crate::files::write_file(
        path,
        text.as_bytes(),
        crate::files::PUBLIC_FILE_MODE,
        crate::files::Overwrite::Replace,
    )?;
    Ok(verified.head)
}

/// `statement` of `head` signed by the identity key in the HSM.
fn signed(config: &Config, head: Head, statement: fn(&Head) -> Vec<u8>) -> Result<SignedHead> {
    let key = crate::app::open_signing_key(config, KeyRole::Identity)?;
    let signature = key.sign_sha256(&statement(&head))?;
    Ok(SignedHead {
        head: head.to_string(),
        identity_key: hex::encode(key.public_key().as_sec1()),
        signature: hex::encode(signature.as_bytes()),
    })
}

/// Which entries `audit prune` removes: those before a sequence number, or those older than a
/// time (and every entry before the first younger one). The newest entry always stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    BeforeSeq(u64),
    OlderThanMs(u64),
}

/// What `audit prune` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPruneSummary {
    /// Entries written to the archive (0: nothing was older than the cut but the newest entry,
    /// and no archive was written).
    pub archived: u64,
    /// The first entry archived.
    pub first: u64,
    /// The anchor now stored: the head of the last entry archived ([`Head::EMPTY`] for a log
    /// never pruned).
    pub anchor: Head,
    /// Entries deleted from the database: those archived, plus any an interrupted prune left.
    pub removed: u64,
}

/// `audit prune`: verify the chain from the stored anchor (refusing a broken one), sign the head
/// of the last entry before the cut as the new anchor, write the entries up to it to `archive`
/// (fsynced; never over an existing file), store the anchor, then delete them. An archive left
/// by a prune interrupted before the anchor was stored ends beyond the stored anchor: `verify
/// --archive` refuses it, and the next prune archives the same entries again.
pub fn prune_audit(config: &Config, archive: &Path, cut: Cut) -> Result<AuditPruneSummary> {
    // Before reading millions of entries: an existing archive is never overwritten.
    if archive.symlink_metadata().is_ok() {
        return Err(crate::files::FileError::WouldOverwrite(archive.to_owned()).into());
    }
    let store = crate::app::open_store(config)?;
    let (stored, anchor, new_anchor) = store
        .read_audit(|snapshot| -> Result<_> {
            let stored = snapshot.anchor()?;
            let anchor = checked_anchor(config, stored.as_ref())?;
            // One pass: the chain must be intact, and the last entry before the cut is found.
            let mut chain = ChainVerifier::new(anchor);
            let mut before_cut: Option<Head> = None;
            let mut previous = anchor;
            let mut past_cut = false;
            snapshot.for_each(anchor.seq, &mut |entry| -> Result<()> {
                chain.push(&entry).map_err(|fault| {
                    anyhow::anyhow!(
                        "{}; refusing to prune a broken chain (it is evidence)",
                        broken(&store, fault)
                    )
                })?;
                let removable = !past_cut
                    && match cut {
                        Cut::BeforeSeq(seq) => entry.seq < seq,
                        Cut::OlderThanMs(ms) => entry.record.time_ms < ms,
                    };
                if removable {
                    previous = before_cut.unwrap_or(anchor);
                    before_cut = Some(chain.head());
                } else {
                    past_cut = true;
                }
                Ok(())
            })?;
            // The newest entry stays: the writer continues the chain from it.
            let new_anchor = match before_cut {
                Some(head) if head == chain.head() => Some(previous).filter(|p| p.seq > anchor.seq),
                other => other,
            };
            let Some(new_anchor) = new_anchor else {
                return Ok((stored, anchor, None));
            };
            // Signed before the archive is written: an HSM that cannot sign leaves no archive.
            let signed_anchor = signed(config, new_anchor, audit::anchor_statement)?;
            let expected = new_anchor.seq - anchor.seq;
            crate::files::write_file_streamed(
                archive,
                crate::files::PRIVATE_FILE_MODE,
                crate::files::Overwrite::Refuse,
                &mut |out| {
                    let count = write_entries(snapshot, anchor.seq, new_anchor.seq, out)
                        .map_err(|error| std::io::Error::other(format!("{error:#}")))?;
                    if count != expected {
                        return Err(std::io::Error::other(format!(
                            "wrote {count} entries, expected {expected}"
                        )));
                    }
                    Ok(())
                },
            )?;
            Ok((stored, anchor, Some((new_anchor, signed_anchor))))
        })
        .with_context(|| format!("pruning the audit log {}", store.path().display()))?;
    let Some((new_anchor, signed_anchor)) = new_anchor else {
        // An interrupted prune may have left entries its anchor covers.
        let removed = if anchor.seq > 0 {
            store.delete_audit_through(anchor.seq)?
        } else {
            0
        };
        return Ok(AuditPruneSummary {
            archived: 0,
            first: anchor.seq + 1,
            anchor,
            removed,
        });
    };
    store
        .replace_audit_anchor(stored.as_ref(), &signed_anchor)
        .with_context(|| {
            format!(
                "storing the new audit anchor (the archive {} is written but nothing was removed: discard it)",
                archive.display()
            )
        })?;
    let removed = store.delete_audit_through(new_anchor.seq).with_context(|| {
        format!(
            "deleting the archived entries (the anchor {new_anchor} is stored: run the prune again to finish)"
        )
    })?;
    Ok(AuditPruneSummary {
        archived: new_anchor.seq - anchor.seq,
        first: anchor.seq + 1,
        anchor: new_anchor,
        removed,
    })
}
