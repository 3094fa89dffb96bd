//! The one health probe behind REST `/healthcheck`, gRPC `Health` and the metrics gauges: the
//! HSM session, the slashing-protection database, the keys loaded, and whether the last key
//! reload failed. Also the background key reload (`POST /reload`) whose outcome the probe
//! reports, and the start-up self-test ([`startup_self_test`]: HSM seal/unseal round trip, a
//! fixed BLS vector signed and verified) that `app::build` runs before anything listens.
//!
//! Refuses: a second reload while one is running ([`ReloadBusy`]). The probe itself refuses
//! nothing; it reports, with a typed cause for every check that is down. The self-test refuses
//! to let the appliance serve when any of its checks fails ([`SelfTestError`]).
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::{ServiceError, SigningService};
use crate::hsm::SealError;
use crate::store::StoreError;

/// Why one check of the probe is down.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(transparent)]
    Hsm(#[from] SealError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the health probe did not finish: {0}")]
    Probe(Arc<tokio::task::JoinError>),
}

/// Where the last key reload stands (`GET /reload`), in Web3Signer's vocabulary. Times are
/// ISO-8601 UTC, as Web3Signer writes `lastOperationTime`.
#[derive(Debug, Clone)]
pub enum ReloadState {
    Idle,
    Running {
        started: String,
    },
    Completed {
        at: String,
        keys: usize,
    },
    Failed {
        at: String,
        error: Arc<ServiceError>,
    },
}

/// A reload was asked for while one is running.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a reload operation is already in progress; try again later")]
pub struct ReloadBusy;

/// Everything the probe found.
#[derive(Debug)]
pub struct HealthReport {
    pub hsm: Result<(), HealthError>,
    pub database: Result<(), HealthError>,
    pub keys_loaded: usize,
    pub reload: ReloadState,
}

impl HealthReport {
    /// The failure of the last reload, if it failed (the keys loaded before stay in use).
    pub fn reload_error(&self) -> Option<&ServiceError> {
        match &self.reload {
            ReloadState::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Up when the HSM and the database answer and the last reload did not fail.
    pub fn is_up(&self) -> bool {
        self.hsm.is_ok() && self.database.is_ok() && self.reload_error().is_none()
    }
}

/// ISO-8601 UTC timestamp, whole seconds.
fn now_iso8601() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl SigningService {
    /// Probe the HSM session and the database (both may block: run off the reactor).
    pub async fn probe_health(self: &Arc<Self>) -> HealthReport {
        let service = self.clone();
        let probes = tokio::task::spawn_blocking(move || {
            (service.sealer.health_check(), service.store.health_check())
        })
        .await;
        let (hsm, database) = match probes {
            Ok((hsm, database)) => (hsm.map_err(HealthError::from), database.map_err(Into::into)),
            Err(error) => {
                tracing::error!(%error, "health probe task failed");
                let error = Arc::new(error);
                (
                    Err(HealthError::Probe(error.clone())),
                    Err(HealthError::Probe(error)),
                )
            }
        };
        let report = HealthReport {
            hsm,
            database,
            keys_loaded: self.public_keys().len(),
            reload: self.reload_state(),
        };
        if report.hsm.is_err() {
            self.hsm_down();
        }
        if !report.is_up() {
            tracing::warn!(hsm = ?report.hsm.as_ref().err(), database = ?report.database.as_ref().err(), reload = ?report.reload_error(), "healthcheck: DOWN");
        }
        report
    }

    /// Where the last background reload stands.
    pub fn reload_state(&self) -> ReloadState {
        self.reload_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-read the keys from the store in the background; [`Self::reload_state`] tells how it
    /// went. A failed reload keeps the keys loaded before.
    pub fn start_reload(self: &Arc<Self>) -> Result<(), ReloadBusy> {
        {
            let mut state = self.reload_state.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(*state, ReloadState::Running { .. }) {
                return Err(ReloadBusy);
            }
            *state = ReloadState::Running {
                started: now_iso8601(),
            };
        }
        let service = self.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = service.reload();
            let at = now_iso8601();
            let next = match outcome {
                Ok(keys) => {
                    tracing::info!(keys, "keys reloaded from the store");
                    ReloadState::Completed { at, keys }
                }
                Err(error) => {
                    tracing::error!(%error, "reload failed; the keys loaded before stay in use");
                    ReloadState::Failed {
                        at,
                        error: Arc::new(error),
                    }
                }
            };
            *service
                .reload_state
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = next;
        });
        Ok(())
    }
}

/// Why the start-up self-test refused to let the appliance serve.
#[derive(Debug, thiserror::Error)]
pub enum SelfTestError {
    #[error("self-test: the HSM could not seal a test buffer: {0}")]
    Seal(#[source] SealError),
    #[error("self-test: the HSM could not unseal its own test blob: {0}")]
    Unseal(#[source] SealError),
    #[error("self-test: the HSM unsealed its test blob to different bytes")]
    UnsealMismatch,
    #[error("self-test: the HSM opened a test blob under another context (AAD not bound)")]
    ContextNotBound,
    #[error("self-test: BLS signing gave a wrong signature for the fixed test vector")]
    SignatureMismatch,
    #[error("self-test: BLS verification refused the fixed test vector's signature")]
    VerifyFailed,
    #[error("self-test: BLS verification accepted a signature of another message")]
    VerifyAcceptedWrongMessage,
}

/// One `sign` case of the consensus-spec BLS tests (`shared/vectors/bls/sign`), compiled in so
/// the self-test needs no file: secret key, message, expected signature.
const SELF_TEST_SECRET_KEY: &str =
    "47b8192d77bf871b62e87859d653922725724a5c031afeabc60bcef5ff665138";
const SELF_TEST_MESSAGE: [u8; 32] = [0u8; 32];
const SELF_TEST_SIGNATURE: &str = "b23c46be3a001c63ca711f87a005c200cc550b9429d5f4eb38d74322144f1b63926da3388979e5321012fb1a0526bcd100b5ef5fe72628ce4cd5e904aeaa3279527843fae5ca9ca675f4f51ed8f83bbf7155da9ecc9663100a885d5dc6df96d9";

/// The start-up self-test, run once before the appliance listens (`app::build`): a random
/// buffer sealed and unsealed through the HSM (and refused under another context), and a fixed
/// BLS vector signed and verified with blst (and a wrong message refused). Any failure refuses
/// to serve: an appliance whose HSM or pairing library misbehaves must not sign.
pub fn startup_self_test(sealer: &dyn crate::hsm::Sealer) -> Result<(), SelfTestError> {
    use keystake_core::bls::{self, SecretKey};
    use rand::RngCore;
    use subtle::ConstantTimeEq;

    let secret = SecretKey::from_bytes(&hex::decode(SELF_TEST_SECRET_KEY).expect("constant hex"))
        .expect("the spec vector's key is valid");
    let public_key = secret.public_key();
    let signature = secret.sign(&SELF_TEST_MESSAGE);
    if hex::encode(signature.as_bytes()) != SELF_TEST_SIGNATURE {
        return Err(SelfTestError::SignatureMismatch);
    }
    if !bls::verify(&public_key, &SELF_TEST_MESSAGE, &signature) {
        return Err(SelfTestError::VerifyFailed);
    }
    if bls::verify(&public_key, &[1u8; 32], &signature) {
        return Err(SelfTestError::VerifyAcceptedWrongMessage);
    }

    let mut buffer = zeroize::Zeroizing::new([0u8; crate::hsm::SHARE_LEN]);
    rand::rngs::OsRng.fill_bytes(buffer.as_mut());
    let context = crate::hsm::SealContext {
        share_public_key: public_key,
        share_index: None,
        group_public_key: None,
    };
    let sealed = sealer
        .seal(&buffer, &context)
        .map_err(SelfTestError::Seal)?;
    let opened = sealer
        .unseal(&sealed, &context)
        .map_err(SelfTestError::Unseal)?;
    if !bool::from(opened.as_slice().ct_eq(buffer.as_slice())) {
        return Err(SelfTestError::UnsealMismatch);
    }
    let other = crate::hsm::SealContext {
        group_public_key: Some(public_key),
        ..context
    };
    if sealer.unseal(&sealed, &other).is_ok() {
        return Err(SelfTestError::ContextNotBound);
    }
    Ok(())
}
