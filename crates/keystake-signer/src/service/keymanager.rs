//! The Ethereum keymanager API's logic (`/eth/v1/keystores`): bearer-token authorisation,
//! keystore import (decrypted in parallel, every key sealed by the HSM, EIP-3076 slashing data
//! imported only for the keys being imported, all-or-nothing) and delete (the key stops signing
//! first, then its slashing data is exported into the answer; slashing data is never deleted).
//! The HTTP adapter is `crate::net::rest::keymanager`; statuses are mapped in `crate::net::error`.
//!
//! Rights are per key: a caller's `keymanager` grant decides which keys it lists, and an
//! import or delete naming any key outside its grant is refused whole (403) before anything is
//! changed — a grant on key A does not let its holder delete key B or read B's history.
//!
//! Refuses: requests without a bearer token (401) or with a wrong one (403, compared in
//! constant time), any key the caller's `keymanager` grant does not cover (403), token files shorter than 256 bits or not hex, `keystores`/`passwords` of
//! different lengths, malformed public keys, and slashing data that is not a valid EIP-3076
//! interchange for this appliance's network (nothing is imported then).
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::service::authz::Caller;
use crate::service::{self, ServiceError, SigningService};
use crate::store::{InsertOutcome, ShareOrigin, StoreError};
use keystake_core::bls;
use keystake_core::keystore;
use keystake_core::policy::Operation;
use keystake_core::slashing::interchange::Interchange;
use keystake_core::types::{BlsPublicKey, Root};

/// Random bytes in a generated token (256 bits, the keymanager spec's minimum).
pub const TOKEN_BYTES: usize = 32;
/// Shortest token accepted from a token file, in hex characters (256 bits).
pub const MIN_TOKEN_HEX_CHARS: usize = 2 * TOKEN_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum KeymanagerError {
    #[error("missing bearer token: send `Authorization: Bearer <token>` with the token from the appliance's keymanager token file")]
    MissingToken,
    #[error("invalid bearer token")]
    WrongToken,
    #[error("{0}")]
    BadRequest(String),
    #[error("keymanager token file {path}: {reason}")]
    TokenFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// An imported keystore's key that the caller's `keymanager` grant does not cover (the
    /// refusal is audited by `Keymanager::import` and answered as 403).
    #[error("forbidden: keymanager on {0} is not granted to this client; nothing was imported")]
    Ungranted(BlsPublicKey),
}

/// The keymanager API token. Compared in constant time; never printed.
pub struct BearerToken(SecretString);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// A fresh random token: hex of [`TOKEN_BYTES`] bytes from the OS RNG.
    pub fn generate() -> Self {
        let mut bytes = zeroize::Zeroizing::new([0u8; TOKEN_BYTES]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        BearerToken(SecretString::from(hex::encode(bytes.as_slice())))
    }

    /// Accept a token text: hex, at least 256 bits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() < MIN_TOKEN_HEX_CHARS {
            return Err(format!(
                "the token must be at least {MIN_TOKEN_HEX_CHARS} hex characters (256 bits)"
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the token must be hex-encoded".to_owned());
        }
        Ok(BearerToken(SecretString::from(text.to_owned())))
    }

    /// Read the token file (it must exist: `init` writes it).
    pub fn load(path: &Path) -> Result<Self, KeymanagerError> {
        let fail = |reason: String| KeymanagerError::TokenFile {
            path: path.to_owned(),
            reason,
        };
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| fail(format!("{e} (run `keystake-signer init` to create it)")))?,
        );
        Self::parse(&text).map_err(fail)
    }

    /// Check an `Authorization` header value: no bearer token → [`KeymanagerError::MissingToken`]
    /// (401), a different token → [`KeymanagerError::WrongToken`] (403).
    pub fn verify(&self, authorization: Option<&str>) -> Result<(), KeymanagerError> {
        let presented = authorization
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(KeymanagerError::MissingToken)?;
        if constant_time_eq(presented, self.0.expose_secret()) {
            Ok(())
        } else {
            Err(KeymanagerError::WrongToken)
        }
    }
}

/// Equality whose time does not depend on where the texts differ nor on their lengths: both
/// are hashed to 32 bytes (equal length), and the digests are compared with `subtle`.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(da.as_slice().ct_eq(db.as_slice()))
}

/// Create the token file with a fresh token and mode 0600, unless it exists (then it must hold
/// a valid token). Returns whether a new file was written.
pub fn ensure_token_file(path: &Path) -> Result<bool, KeymanagerError> {
    if path.exists() {
        BearerToken::load(path)?;
        return Ok(false);
    }
    let fail = |e: std::io::Error| KeymanagerError::TokenFile {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let token = BearerToken::generate();
    let mut text = zeroize::Zeroizing::new(token.0.expose_secret().to_owned());
    text.push('\n');
    crate::files::write_file(
        path,
        text.as_bytes(),
        crate::files::PRIVATE_FILE_MODE,
        crate::files::Overwrite::Refuse,
    )
    .map_err(|e| KeymanagerError::TokenFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(true)
}

/// A keystore password from a request; never printed.
pub struct Password(SecretString);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(deserializer)?);
        Ok(Password(SecretString::from(text.as_str().to_owned())))
    }
}

/// `POST /eth/v1/keystores` body.
#[derive(Debug, Deserialize)]
pub struct ImportRequest {
    /// JSON-encoded EIP-2335 keystores (strings, as the spec says; anything else is a 400).
    pub keystores: Vec<String>,
    /// `passwords[i]` unlocks `keystores[i]`.
    pub passwords: Vec<Password>,
    /// A JSON-encoded EIP-3076 interchange.
    #[serde(default)]
    pub slashing_protection: Option<String>,
}

/// `DELETE /eth/v1/keystores` body.
#[derive(Debug, Deserialize)]
pub struct DeleteRequest {
    pub pubkeys: Vec<String>,
}

impl DeleteRequest {
    /// The public keys, or a 400 naming the first malformed one.
    pub fn public_keys(&self) -> Result<Vec<BlsPublicKey>, KeymanagerError> {
        self.pubkeys
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse().map_err(|_| {
                    KeymanagerError::BadRequest(format!(
                        "pubkeys[{i}]: {text:?} is not a 0x-prefixed 48-byte BLS public key"
                    ))
                })
            })
            .collect()
    }
}

/// Per-keystore result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportStatus {
    Imported,
    Duplicate,
    Error(String),
}

/// Per-key result of a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteStatus {
    Deleted,
    NotActive,
    NotFound,
    Error(String),
}

/// One `{status, message?}` entry of an import or delete answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusEntry {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl From<&ImportStatus> for StatusEntry {
    fn from(status: &ImportStatus) -> Self {
        match status {
            ImportStatus::Imported => StatusEntry {
                status: "imported",
                message: None,
            },
            ImportStatus::Duplicate => StatusEntry {
                status: "duplicate",
                message: None,
            },
            ImportStatus::Error(message) => StatusEntry {
                status: "error",
                message: Some(message.clone()),
            },
        }
    }
}

impl From<&DeleteStatus> for StatusEntry {
    fn from(status: &DeleteStatus) -> Self {
        let (status, message) = match status {
            DeleteStatus::Deleted => ("deleted", None),
            DeleteStatus::NotActive => ("not_active", None),
            DeleteStatus::NotFound => ("not_found", None),
            DeleteStatus::Error(message) => ("error", Some(message.clone())),
        };
        StatusEntry { status, message }
    }
}

/// `GET /eth/v1/keystores` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedKey {
    pub validating_pubkey: BlsPublicKey,
    /// Every key held here can be deleted through the API.
    pub readonly: bool,
}

/// The answer to a delete: statuses in request order and the EIP-3076 interchange (JSON text)
/// of the keys that were deleted or not active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub statuses: Vec<DeleteStatus>,
    pub slashing_protection: String,
}

/// Run `work` over `items` on up to `workers` OS threads; results in input order.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let workers = workers.clamp(1, items.len().max(1));
    let mut indexed: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, work(item)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    indexed.sort_by_key(|(i, _)| *i);
    indexed.into_iter().map(|(_, r)| r).collect()
}

/// Parse and decrypt one keystore of a request. The error text names the problem, never the
/// password or key.
pub fn decrypt_keystore(keystore: &str, password: &Password) -> Result<bls::SecretKey, String> {
    let parsed = keystore::parse(keystore).map_err(|e| e.to_string())?;
    keystore::decrypt(&parsed, &password.0).map_err(|e| e.to_string())
}

/// The keymanager: one at a time for import and delete (they change which keys sign).
pub struct Keymanager {
    service: Arc<SigningService>,
    token: BearerToken,
    operations: tokio::sync::Mutex<()>,
    workers: usize,
}

impl Keymanager {
    pub fn new(service: Arc<SigningService>, token: BearerToken) -> Self {
        Keymanager {
            service,
            token,
            operations: tokio::sync::Mutex::new(()),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }

    /// The signing service this keymanager manages keys of.
    pub fn service(&self) -> &Arc<SigningService> {
        &self.service
    }

    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), KeymanagerError> {
        self.token.verify(authorization)
    }

    /// The keys `caller`'s `keymanager` grant covers.
    pub fn list(&self, caller: &Caller) -> Vec<ListedKey> {
        let authorizer = self.service.authorizer();
        self.service
            .public_keys()
            .into_iter()
            .filter(|key| {
                authorizer.allows(
                    caller,
                    &self.service.admin_target(*key),
                    Operation::Keymanager,
                )
            })
            .map(|validating_pubkey| ListedKey {
                validating_pubkey,
                readonly: false,
            })
            .collect()
    }

    /// Import keystores; one status per keystore, in request order.
    pub async fn import(
        &self,
        caller: &Caller,
        request: ImportRequest,
    ) -> Result<Vec<ImportStatus>, KeymanagerError> {
        if request.keystores.len() != request.passwords.len() {
            return Err(KeymanagerError::BadRequest(format!(
                "{} keystores but {} passwords: passwords[i] must unlock keystores[i]",
                request.keystores.len(),
                request.passwords.len()
            )));
        }
        let _one_at_a_time = self.operations.lock().await;
        let service = self.service.clone();
        let workers = self.workers;
        let who = caller.clone();
        let outcome =
            tokio::task::spawn_blocking(move || import_blocking(&service, &who, &request, workers))
                .await
                .map_err(ServiceError::TaskFailed)?;
        if let Err(KeymanagerError::Ungranted(key)) = &outcome {
            // The same decision again, through the path that audits and counts refusals.
            let target = self.service.admin_target(*key);
            self.service
                .authorize(caller, &target, Operation::Keymanager)
                .await?;
        }
        outcome
    }

    /// Refuse the whole request unless `caller` holds `keymanager` on every key (audited).
    async fn check_every_key(
        &self,
        caller: &Caller,
        keys: &[BlsPublicKey],
    ) -> Result<(), KeymanagerError> {
        for key in keys {
            let target = self.service.admin_target(*key);
            self.service
                .authorize(caller, &target, Operation::Keymanager)
                .await?;
        }
        Ok(())
    }

    /// Delete keys: each stops signing, then the slashing data of all of them is exported.
    pub async fn delete(
        &self,
        caller: &Caller,
        public_keys: &[BlsPublicKey],
    ) -> Result<DeleteOutcome, KeymanagerError> {
        self.check_every_key(caller, public_keys).await?;
        let _one_at_a_time = self.operations.lock().await;
        let mut statuses = Vec::with_capacity(public_keys.len());
        for public_key in public_keys {
            let status = match self.service.deactivate(public_key).await {
                Ok(true) => {
                    tracing::info!(key = %public_key, "key deleted: it no longer signs");
                    DeleteStatus::Deleted
                }
                // Not active here: `not_active` when the database knows the key (its slashing
                // data is returned), `not_found` when it has never seen it.
                Ok(false) => match self.known_to_database(*public_key).await {
                    Ok(true) => DeleteStatus::NotActive,
                    Ok(false) => DeleteStatus::NotFound,
                    Err(error) => DeleteStatus::Error(error.to_string()),
                },
                Err(error) => {
                    tracing::error!(key = %public_key, %error, "key could not be deleted");
                    DeleteStatus::Error(error.to_string())
                }
            };
            statuses.push(status);
        }
        let exported: Vec<BlsPublicKey> = public_keys
            .iter()
            .zip(&statuses)
            .filter(|(_, s)| matches!(s, DeleteStatus::Deleted | DeleteStatus::NotActive))
            .map(|(k, _)| *k)
            .collect();
        let slashing_protection = self.export_slashing(&exported).await?;
        Ok(DeleteOutcome {
            statuses,
            slashing_protection,
        })
    }

    async fn known_to_database(&self, public_key: BlsPublicKey) -> Result<bool, KeymanagerError> {
        let service = self.service.clone();
        let history = tokio::task::spawn_blocking(move || service.store().history(&public_key))
            .await
            .map_err(ServiceError::TaskFailed)?;
        Ok(history.map_err(ServiceError::from)?.is_some())
    }

    /// The EIP-3076 interchange of `keys` (complete history, never deleted). A database not yet
    /// bound to a network holds no history at all; the answer is then a document with the
    /// network's genesis validators root (zero for a custom network) and an empty record per key.
    async fn export_slashing(&self, keys: &[BlsPublicKey]) -> Result<String, KeymanagerError> {
        let service = self.service.clone();
        let keys = keys.to_vec();
        tokio::task::spawn_blocking(
            move || match service.store().export_interchange(Some(&keys)) {
                Ok(interchange) => Ok(interchange.to_json()),
                Err(StoreError::NotBound) => {
                    let root = service
                        .network()
                        .genesis_validators_root
                        .unwrap_or(Root([0; 32]));
                    Ok(empty_history(root, &keys).to_json())
                }
                Err(error) => Err(KeymanagerError::Service(error.into())),
            },
        )
        .await
        .map_err(ServiceError::TaskFailed)?
    }
}

/// An interchange with an empty record for each key.
fn empty_history(root: Root, keys: &[BlsPublicKey]) -> Interchange {
    let mut interchange = Interchange::new(root);
    let mut seen = HashSet::new();
    for key in keys.iter().filter(|k| seen.insert(**k)) {
        interchange
            .data
            .push(keystake_core::slashing::interchange::InterchangeRecord {
                pubkey: *key,
                signed_blocks: Vec::new(),
                signed_attestations: Vec::new(),
            });
    }
    interchange
}

/// Parse the request's interchange and check it against the database's network before any
/// keystore is decrypted; a document that cannot be imported refuses the whole request.
fn parse_slashing_protection(
    service: &SigningService,
    text: &str,
) -> Result<Interchange, KeymanagerError> {
    let interchange = Interchange::from_json(text)
        .map_err(|e| KeymanagerError::BadRequest(format!("slashing_protection: {e}")))?;
    let file = interchange.metadata.genesis_validators_root;
    if let Some(bound) = service
        .store()
        .genesis_validators_root()
        .map_err(ServiceError::from)?
    {
        if bound != file {
            return Err(KeymanagerError::BadRequest(format!(
                "slashing_protection: genesis_validators_root {file} is not {bound}, the network this signer's slashing database is bound to; nothing was imported"
            )));
        }
    }
    Ok(interchange)
}

/// The blocking part of an import: decrypt all keystores in parallel, then seal and store the
/// new keys (the HSM seals each; the plaintext never leaves memory), then reload.
fn import_blocking(
    service: &SigningService,
    caller: &Caller,
    request: &ImportRequest,
    workers: usize,
) -> Result<Vec<ImportStatus>, KeymanagerError> {
    let interchange = request
        .slashing_protection
        .as_deref()
        .map(|text| parse_slashing_protection(service, text))
        .transpose()?;
    let total = request.keystores.len();
    let jobs: Vec<usize> = (0..total).collect();
    let finished = AtomicUsize::new(0);
    tracing::info!(total, workers, "keystore import: decrypting");
    let decrypted = parallel_map(&jobs, workers, |&i| {
        let result = decrypt_keystore(&request.keystores[i], &request.passwords[i]);
        // The KDF and cipher frames below held the derived key and the plaintext secret.
        keystake_core::wipe::wipe_stack();
        let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
        match &result {
            Ok(_) => tracing::info!(done, total, "keystore import: decrypted {done}/{total}"),
            Err(error) => {
                tracing::warn!(done, total, keystore = i, %error, "keystore import: keystore {i} refused ({done}/{total})")
            }
        }
        result
    });

    // Per-key rights before anything is stored: one key outside the grant refuses the whole
    // request (the caller may not even learn whether the others would have been imported).
    for secret in decrypted.iter().flatten() {
        let key = secret.public_key();
        let target = service.admin_target(key);
        if !service
            .authorizer()
            .allows(caller, &target, Operation::Keymanager)
        {
            return Err(KeymanagerError::Ungranted(key));
        }
    }

    let active: HashSet<BlsPublicKey> = service.public_keys().into_iter().collect();
    let mut seen = HashSet::new();
    let mut statuses: Vec<ImportStatus> = Vec::with_capacity(total);
    let mut candidates: Vec<(usize, bls::SecretKey)> = Vec::new();
    for (i, result) in decrypted.into_iter().enumerate() {
        match result {
            Err(message) => statuses.push(ImportStatus::Error(message)),
            Ok(secret) => {
                let public_key = secret.public_key();
                if active.contains(&public_key) || !seen.insert(public_key) {
                    statuses.push(ImportStatus::Duplicate);
                } else {
                    statuses.push(ImportStatus::Imported);
                    candidates.push((i, secret));
                }
            }
        }
    }

    // The history first, all-or-nothing and only for the keys being imported: a key must never
    // be able to sign before its slashing data is in place.
    if let Some(interchange) = &interchange {
        let keys: Vec<BlsPublicKey> = candidates.iter().map(|(_, s)| s.public_key()).collect();
        if !keys.is_empty() {
            let summary = service
                .store()
                .import_interchange(interchange, Some(&keys))
                .map_err(|error| match error {
                    StoreError::GenesisMismatch { .. } | StoreError::InvalidInterchange(_) => {
                        KeymanagerError::BadRequest(format!(
                            "slashing_protection: {error}; nothing was imported"
                        ))
                    }
                    other => KeymanagerError::Service(other.into()),
                })?;
            tracing::info!(
                validators = summary.validators,
                blocks = summary.blocks_imported,
                attestations = summary.attestations_imported,
                skipped_keys = summary.validators_skipped,
                "keystore import: slashing protection imported for the new keys"
            );
        }
    }

    // Seal in parallel (HSM round trips), then store in request order in one transaction, so
    // the listing order is the request order and the batch costs one fsync.
    let sealed = parallel_map(&candidates, workers, |(_, secret)| {
        let record = service::seal_record(
            service.sealer().as_ref(),
            secret,
            ShareOrigin::Keystore,
            None,
        );
        keystake_core::wipe::wipe_stack();
        record
    });
    let mut records = Vec::new();
    let mut stored_for = Vec::new();
    for ((i, _), outcome) in candidates.iter().zip(sealed) {
        match outcome {
            Ok(record) => {
                records.push(record);
                stored_for.push(*i);
            }
            Err(error) => {
                tracing::error!(keystore = i, %error, "keystore import: sealing failed");
                statuses[*i] = ImportStatus::Error(error.to_string());
            }
        }
    }
    match service.store().insert_shares(&records) {
        Ok(outcomes) => {
            for (i, outcome) in stored_for.into_iter().zip(outcomes) {
                statuses[i] = match outcome {
                    InsertOutcome::Inserted | InsertOutcome::Reenabled => ImportStatus::Imported,
                    InsertOutcome::Duplicate => ImportStatus::Duplicate,
                };
            }
        }
        Err(error) => {
            // All or nothing: the transaction rolled back, no key of this batch was stored.
            tracing::error!(%error, "keystore import: storing the sealed keys failed");
            for i in stored_for {
                statuses[i] = ImportStatus::Error(error.to_string());
            }
        }
    }
    let keys = service.reload()?;
    let imported = statuses
        .iter()
        .filter(|s| **s == ImportStatus::Imported)
        .count();
    tracing::info!(
        total,
        imported,
        keys,
        "keystore import: done ({imported} of {total} imported)"
    );
    Ok(statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_256_bits_of_hex_and_checked_in_full() {
        let token = BearerToken::generate();
        let text = token.0.expose_secret().to_owned();
        assert_eq!(text.len(), MIN_TOKEN_HEX_CHARS);
        assert!(BearerToken::parse(&text).is_ok());
        assert!(BearerToken::parse(&text[1..]).is_err(), "255 bits");
        assert!(BearerToken::parse(&format!("{}zz", &text[2..])).is_err());
        assert!(token.verify(Some(&format!("Bearer {text}"))).is_ok());
        assert!(token.verify(Some(&format!("bearer  {text} "))).is_ok());
        assert!(matches!(
            token.verify(None),
            Err(KeymanagerError::MissingToken)
        ));
        assert!(matches!(
            token.verify(Some(&format!("Basic {text}"))),
            Err(KeymanagerError::MissingToken)
        ));
        assert!(matches!(
            token.verify(Some("Bearer ")),
            Err(KeymanagerError::MissingToken)
        ));
        let mut wrong = text.clone().into_bytes();
        wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
        assert!(matches!(
            token.verify(Some(&format!(
                "Bearer {}",
                String::from_utf8(wrong).unwrap()
            ))),
            Err(KeymanagerError::WrongToken)
        ));
        assert!(matches!(
            token.verify(Some(&format!("Bearer {text}0"))),
            Err(KeymanagerError::WrongToken)
        ));
        assert!(!format!("{token:?}").contains(&text));
    }

    #[test]
    fn token_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keymanager.token");
        assert!(ensure_token_file(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(!ensure_token_file(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            ensure_token_file(&path),
            Err(KeymanagerError::TokenFile { .. })
        ));
    }

    #[test]
    fn parallel_map_keeps_order_and_uses_threads() {
        let items: Vec<u64> = (0..100).collect();
        let threads = std::sync::Mutex::new(HashSet::new());
        let out = parallel_map(&items, 4, |x| {
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(1));
            x * 2
        });
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert!(threads.lock().unwrap().len() > 1);
        assert!(parallel_map(&Vec::<u8>::new(), 4, |x| *x).is_empty());
    }

    #[test]
    fn delete_request_names_the_bad_key() {
        let ok = format!("0x{}", "a5".repeat(48));
        let request = DeleteRequest {
            pubkeys: vec![ok.clone(), "0x1234".into()],
        };
        let error = request.public_keys().unwrap_err().to_string();
        assert!(error.contains("pubkeys[1]"), "{error}");
        let request = DeleteRequest { pubkeys: vec![ok] };
        assert_eq!(request.public_keys().unwrap().len(), 1);
    }

    #[test]
    fn keystore_decryption_errors_are_messages_without_secrets() {
        let secret = bls::SecretKey::random(&mut rand::rngs::OsRng);
        let ks = keystore::encrypt(
            &secret,
            &SecretString::from("right horse".to_owned()),
            keystore::KdfChoice::INSECURE_FAST_FOR_TESTS,
            &mut rand::rngs::OsRng,
        )
        .unwrap();
        let text = serde_json::to_string(&ks).unwrap();
        let good = Password(SecretString::from("right horse".to_owned()));
        let bad = Password(SecretString::from("wrong horse".to_owned()));
        let key = decrypt_keystore(&text, &good).unwrap();
        assert_eq!(key.public_key(), secret.public_key());
        let error = decrypt_keystore(&text, &bad).unwrap_err();
        assert!(error.contains("wrong password"), "{error}");
        assert!(!error.contains("wrong horse"));
        assert!(decrypt_keystore("{}", &good).is_err());
        let request: Result<ImportRequest, _> =
            serde_json::from_value(serde_json::json!({"keystores": [{}], "passwords": ["x"]}));
        assert!(request.is_err(), "a keystore must be a string");
        assert!(!format!("{bad:?}").contains("horse"));
    }
}
