//! Operator endpoints of the Web3Signer API: `GET /healthcheck` (Web3Signer's JSON shape, with
//! checks for the HSM session and the slashing-protection database, 503 when one is down),
//! `POST /reload` (reload keys from the store in the background, 202; 409 while one runs),
//! `GET /reload` (status of the last reload) and `GET /api/v1/eth2/highWatermark`.
//!
//! Refuses: a second reload while one is running (409). Nothing here signs or changes keys; a
//! reload only re-reads what `keys import` or the keymanager API stored.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::service::SigningService;

/// Web3Signer's check ids (its `HealthCheckNames`), plus ours for the HSM session.
pub const CHECK_DEFAULT: &str = "default-check";
pub const CHECK_KEYS: &str = "keys-check";
pub const CHECK_KEYS_LOADING: &str = "sealed-keys-loading";
pub const CHECK_SLASHING_DB: &str = "slashing-protection-db-health-check";
pub const CHECK_HSM: &str = "hsm-session-health-check";

/// Where the last reload stands (`GET /reload`), in Web3Signer's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadState {
    Idle,
    Running { started: String },
    Completed { at: String, keys: usize },
    Failed { at: String, error: String },
}

/// State shared by the operator endpoints.
pub struct Admin {
    service: Arc<SigningService>,
    reload: Mutex<ReloadState>,
}

impl Admin {
    pub fn new(service: Arc<SigningService>) -> Arc<Self> {
        Arc::new(Admin {
            service,
            reload: Mutex::new(ReloadState::Idle),
        })
    }

    fn reload_state(&self) -> std::sync::MutexGuard<'_, ReloadState> {
        self.reload.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The operator routes over a shared service.
pub fn router(service: Arc<SigningService>) -> Router {
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/reload", get(reload_status).post(reload))
        .route("/api/v1/eth2/highWatermark", get(high_watermark))
        .with_state(Admin::new(service))
}

/// ISO-8601 UTC timestamp, as Web3Signer writes `lastOperationTime`.
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

fn check(id: &str, result: &Result<(), String>) -> Value {
    match result {
        Ok(()) => json!({"id": id, "status": "UP"}),
        Err(reason) => json!({"id": id, "status": "DOWN", "data": {"error": reason}}),
    }
}

/// The healthcheck body and whether everything is up. Pure: the probes' results come in.
pub fn health_body(
    hsm: &Result<(), String>,
    db: &Result<(), String>,
    keys_loaded: usize,
    reload: &ReloadState,
) -> (bool, Value) {
    let keys_error = match reload {
        ReloadState::Failed { error, .. } => Some(error.clone()),
        _ => None,
    };
    let mut keys_loading = json!({
        "id": CHECK_KEYS_LOADING,
        "status": if keys_error.is_none() { "UP" } else { "DOWN" },
        "data": {"keys-loaded": keys_loaded, "error-count": usize::from(keys_error.is_some())},
    });
    if let Some(error) = &keys_error {
        keys_loading["data"]["error"] = json!(error);
    }
    let keys_up = keys_error.is_none();
    let up = hsm.is_ok() && db.is_ok() && keys_up;
    let word = |ok: bool| if ok { "UP" } else { "DOWN" };
    let body = json!({
        "status": word(up),
        "checks": [
            {"id": CHECK_DEFAULT, "status": "UP"},
            {"id": CHECK_KEYS, "status": word(keys_up), "checks": [keys_loading]},
            check(CHECK_SLASHING_DB, db),
            check(CHECK_HSM, hsm),
        ],
        "outcome": word(up),
    });
    (up, body)
}

async fn healthcheck(State(admin): State<Arc<Admin>>) -> Response {
    let service = admin.service.clone();
    // Both probes may block (HSM call, SQLite write-lock probe): keep them off the reactor.
    let probes = tokio::task::spawn_blocking(move || {
        let (hsm, db) = service.health();
        (
            hsm.map_err(|e| e.to_string()),
            db.map_err(|e| e.to_string()),
        )
    })
    .await;
    let (hsm, db) = probes.unwrap_or_else(|e| {
        let failed = Err(format!("health probe failed: {e}"));
        (failed.clone(), failed)
    });
    let reload = admin.reload_state().clone();
    let (up, body) = health_body(&hsm, &db, admin.service.public_keys().len(), &reload);
    if !up {
        tracing::warn!(%body, "healthcheck: DOWN");
    }
    let status = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn reload(State(admin): State<Arc<Admin>>) -> Response {
    {
        let mut state = admin.reload_state();
        if matches!(*state, ReloadState::Running { .. }) {
            return (
                StatusCode::CONFLICT,
                Json(json!({
                    "status": "error",
                    "message": "A reload operation is already in progress. Please try again later.",
                })),
            )
                .into_response();
        }
        *state = ReloadState::Running {
            started: now_iso8601(),
        };
    }
    let task_admin = admin.clone();
    tokio::task::spawn_blocking(move || {
        let outcome = task_admin.service.reload();
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
                    error: format!("Reload failed: {error}"),
                }
            }
        };
        *task_admin.reload_state() = next;
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "accepted",
            "message": "Reload operation accepted and is running in the background. Use GET /reload to check status.",
        })),
    )
        .into_response()
}

/// `GET /reload` body for a state.
pub fn reload_body(state: &ReloadState) -> Value {
    match state {
        ReloadState::Idle => json!({"status": "idle"}),
        ReloadState::Running { started } => {
            json!({"status": "running", "lastOperationTime": started})
        }
        ReloadState::Completed { at, .. } => {
            json!({"status": "completed", "lastOperationTime": at})
        }
        ReloadState::Failed { at, error } => {
            json!({"status": "failed", "lastOperationTime": at, "lastError": error})
        }
    }
}

async fn reload_status(State(admin): State<Arc<Admin>>) -> Json<Value> {
    Json(reload_body(&admin.reload_state()))
}

/// Web3Signer's global high watermark is an operator-set ceiling; this signer has none (its
/// lower bounds are per key, from EIP-3076 imports), so it answers as Web3Signer does when none
/// is set: an empty object.
async fn high_watermark() -> Json<Value> {
    Json(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_body_has_web3signer_shape_and_goes_down_with_any_check() {
        let (up, body) = health_body(&Ok(()), &Ok(()), 3, &ReloadState::Idle);
        assert!(up);
        assert_eq!(body["status"], "UP");
        assert_eq!(body["outcome"], "UP");
        let checks = body["checks"].as_array().unwrap();
        let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            [CHECK_DEFAULT, CHECK_KEYS, CHECK_SLASHING_DB, CHECK_HSM]
        );
        assert_eq!(checks[1]["checks"][0]["data"]["keys-loaded"], 3);
        assert_eq!(checks[1]["checks"][0]["data"]["error-count"], 0);

        let (up, body) = health_body(&Ok(()), &Err("gone".into()), 3, &ReloadState::Idle);
        assert!(!up);
        assert_eq!(body["status"], "DOWN");
        assert_eq!(body["checks"][2]["status"], "DOWN");
        assert_eq!(body["checks"][2]["data"]["error"], "gone");
        assert_eq!(body["checks"][3]["status"], "UP");

        let (up, _) = health_body(&Err("no session".into()), &Ok(()), 0, &ReloadState::Idle);
        assert!(!up);
        let failed = ReloadState::Failed {
            at: "t".into(),
            error: "bad row".into(),
        };
        let (up, body) = health_body(&Ok(()), &Ok(()), 2, &failed);
        assert!(!up);
        assert_eq!(body["checks"][1]["checks"][0]["data"]["error-count"], 1);
    }

    #[test]
    fn reload_body_matches_the_spec_states() {
        assert_eq!(reload_body(&ReloadState::Idle), json!({"status": "idle"}));
        let done = reload_body(&ReloadState::Completed {
            at: "2025-01-01T00:00:00Z".into(),
            keys: 1,
        });
        assert_eq!(done["status"], "completed");
        assert!(done.get("lastError").is_none());
        let failed = reload_body(&ReloadState::Failed {
            at: "x".into(),
            error: "e".into(),
        });
        assert_eq!(failed["lastError"], "e");
        assert!(now_iso8601().ends_with('Z'), "{}", now_iso8601());
    }
}
