//! The one health probe behind REST `/healthcheck`, gRPC `Health` and the metrics gauges: the
//! HSM session, the slashing-protection database, the keys loaded, and whether the last key
//! reload failed. Also the background key reload (`POST /reload`) whose outcome the probe
//! reports.
//!
//! Refuses: a second reload while one is running ([`ReloadBusy`]). The probe itself refuses
//! nothing; it reports, with a typed cause for every check that is down.
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
