//! Operator endpoints of the Web3Signer API: `GET /healthcheck` (Web3Signer's JSON shape, with
//! checks for the HSM session and the slashing-protection database, 503 when one is down),
//! `POST /reload` (reload keys from the store in the background, 202; 409 while one runs),
//! `GET /reload` (status of the last reload) and `GET /api/v1/eth2/highWatermark`. A thin
//! adapter over the service's one health probe (`crate::service::health`); statuses come from
//! `crate::net::error`.
//!
//! Refuses: `POST /reload` and `GET /reload` without an `operator` grant on all keys (403,
//! audited); a second reload while one is running (409). Nothing here signs or changes keys; a
//! reload only re-reads what `keys import` or the keymanager API stored, serialized with key
//! deletion (`SigningService::reload`), so it cannot bring a deleted key back.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::body::RestCaller;
use crate::net::error::{self, ApiError};
use crate::service::health::{HealthError, HealthReport, ReloadState};
use crate::service::SigningService;
use keystake_core::policy::{Operation, Target};

/// Web3Signer's check ids (its `HealthCheckNames`), plus ours for the HSM session.
pub const CHECK_DEFAULT: &str = "default-check";
pub const CHECK_KEYS: &str = "keys-check";
pub const CHECK_KEYS_LOADING: &str = "sealed-keys-loading";
pub const CHECK_SLASHING_DB: &str = "slashing-protection-db-health-check";
pub const CHECK_HSM: &str = "hsm-session-health-check";

/// The operator routes over a shared service.
pub fn router(service: Arc<SigningService>) -> Router {
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/reload", get(reload_status).post(reload))
        .route("/api/v1/eth2/highWatermark", get(high_watermark))
        .with_state(service)
}

fn check(id: &str, result: &Result<(), HealthError>) -> Value {
    match result {
        Ok(()) => json!({"id": id, "status": "UP"}),
        Err(reason) => {
            json!({"id": id, "status": "DOWN", "data": {"error": reason.to_string()}})
        }
    }
}

/// The healthcheck body in Web3Signer's shape. Pure: the probe's report comes in.
pub fn health_body(report: &HealthReport) -> Value {
    let keys_error = report.reload_error().map(|e| format!("Reload failed: {e}"));
    let mut keys_loading = json!({
        "id": CHECK_KEYS_LOADING,
        "status": if keys_error.is_none() { "UP" } else { "DOWN" },
        "data": {"keys-loaded": report.keys_loaded, "error-count": usize::from(keys_error.is_some())},
    });
    if let Some(error) = &keys_error {
        keys_loading["data"]["error"] = json!(error);
    }
    let word = |ok: bool| if ok { "UP" } else { "DOWN" };
    json!({
        "status": word(report.is_up()),
        "checks": [
            {"id": CHECK_DEFAULT, "status": "UP"},
            {"id": CHECK_KEYS, "status": word(keys_error.is_none()), "checks": [keys_loading]},
            check(CHECK_SLASHING_DB, &report.database),
            check(CHECK_HSM, &report.hsm),
        ],
        "outcome": word(report.is_up()),
    })
}

async fn healthcheck(State(service): State<Arc<SigningService>>) -> Response {
    let report = service.probe_health().await;
    let mut body = health_body(&report);
    // The process id lets a benchmark on this machine read the appliance's CPU time
    // (`bench load`); an extra field Web3Signer clients ignore.
    body["pid"] = json!(std::process::id());
    (error::health_status(&report), Json(body)).into_response()
}

async fn reload(
    State(service): State<Arc<SigningService>>,
    RestCaller(caller): RestCaller,
) -> Result<Response, ApiError> {
    service
        .authorize(&caller, &Target::AllKeys, Operation::Operator)
        .await?;
    service.start_reload()?;
    Ok((
        error::ACCEPTED,
        Json(json!({
            "status": "accepted",
            "message": "Reload operation accepted and is running in the background. Use GET /reload to check status.",
        })),
    )
        .into_response())
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
            json!({"status": "failed", "lastOperationTime": at, "lastError": format!("Reload failed: {error}")})
        }
    }
}

async fn reload_status(
    State(service): State<Arc<SigningService>>,
    RestCaller(caller): RestCaller,
) -> Result<Json<Value>, ApiError> {
    service
        .authorize(&caller, &Target::AllKeys, Operation::Operator)
        .await?;
    Ok(Json(reload_body(&service.reload_state())))
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
    use crate::hsm::SealError;
    use crate::service::ServiceError;
    use crate::store::StoreError;

    fn report(
        hsm: Result<(), HealthError>,
        database: Result<(), HealthError>,
        reload: ReloadState,
    ) -> HealthReport {
        HealthReport {
            hsm,
            database,
            keys_loaded: 3,
            reload,
        }
    }

    #[test]
    fn health_body_has_web3signer_shape_and_goes_down_with_any_check() {
        let up = report(Ok(()), Ok(()), ReloadState::Idle);
        assert!(up.is_up());
        let body = health_body(&up);
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

        let db_down = report(
            Ok(()),
            Err(StoreError::WriterGone.into()),
            ReloadState::Idle,
        );
        assert!(!db_down.is_up());
        let body = health_body(&db_down);
        assert_eq!(body["status"], "DOWN");
        assert_eq!(body["checks"][2]["status"], "DOWN");
        assert_eq!(
            body["checks"][2]["data"]["error"],
            StoreError::WriterGone.to_string()
        );
        assert_eq!(body["checks"][3]["status"], "UP");

        let hsm_down = report(
            Err(SealError::Unavailable("no session".into()).into()),
            Ok(()),
            ReloadState::Idle,
        );
        assert!(!hsm_down.is_up());
        let failed = ReloadState::Failed {
            at: "t".into(),
            error: Arc::new(ServiceError::Store(StoreError::WriterGone)),
        };
        let reload_failed = report(Ok(()), Ok(()), failed);
        assert!(!reload_failed.is_up());
        let body = health_body(&reload_failed);
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
            error: Arc::new(ServiceError::Store(StoreError::WriterGone)),
        });
        assert_eq!(
            failed["lastError"],
            format!("Reload failed: {}", StoreError::WriterGone)
        );
    }
}
