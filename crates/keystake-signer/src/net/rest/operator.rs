//! KeyStake's own administrative REST routes and the authorization guard for the keymanager
//! API. Thin adapter: decisions are the authorizer's, statuses come from [`super::error`].
//!
//! Routes: `POST /keystake/v1/admin/reload` re-reads the policy file and the CRL (needs an
//! `operator` grant on all keys); `POST /keystake/v1/admin/slashing/export` (body
//! `{"public_keys": ["0x…"]}`, empty or absent for all keys) answers an EIP-3076 interchange;
//! `POST /keystake/v1/admin/slashing/import` (body: an interchange) imports it atomically — both
//! need `slashing_admin` on every key concerned. Guard: every request under `/eth/v1/` (the keymanager API,
//! which keeps its own bearer token) also needs a `keymanager` grant (on any keys; which keys a
//! keymanager call may touch is for that API to check per key with
//! `SigningService::authorize`); without it the answer is 403 before the bearer token is even
//! looked at.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::body::{ClientBody, Operator, RestCaller};
use crate::net::error::ApiError;
use crate::net::tls::ClientIdentity;
use crate::service::authz::{Api, Caller};
use crate::service::SigningService;
use keystake_core::policy::{Operation, Target};
use keystake_core::types::BlsPublicKey;

/// Path prefix of the standard keymanager API.
pub const KEYMANAGER_PREFIX: &str = "/eth/v1/";

pub fn router(service: Arc<SigningService>) -> Router {
    Router::new()
        .route("/keystake/v1/admin/reload", post(reload))
        .route("/keystake/v1/admin/slashing/export", post(export_slashing))
        .route("/keystake/v1/admin/slashing/import", post(import_slashing))
        .with_state(service)
}

async fn reload(
    State(service): State<Arc<SigningService>>,
    RestCaller(caller): RestCaller,
) -> Result<Response, ApiError> {
    service
        .authorize(&caller, &Target::AllKeys, Operation::Operator)
        .await?;
    let summary = service.authorizer().reload().map_err(ApiError::from)?;
    Ok(Json(json!({
        "enforced": summary.enforced,
        "clients": summary.clients,
        "crl_reloaded": summary.tls_reloaded,
    }))
    .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportRequest {
    #[serde(default)]
    public_keys: Vec<BlsPublicKey>,
}

async fn export_slashing(
    State(service): State<Arc<SigningService>>,
    body: ClientBody<Operator>,
) -> Result<Response, ApiError> {
    let ClientBody {
        caller,
        bytes: body,
        ..
    } = body;
    let request: ExportRequest = if body.is_empty() {
        ExportRequest {
            public_keys: Vec::new(),
        }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid export request: {e}")))?
    };
    let interchange = service
        .export_interchange_as(&caller, &request.public_keys)
        .await?;
    Ok((
        [(http::header::CONTENT_TYPE, "application/json")],
        interchange.to_json(),
    )
        .into_response())
}

async fn import_slashing(
    State(service): State<Arc<SigningService>>,
    body: ClientBody<Operator>,
) -> Result<Response, ApiError> {
    let ClientBody { caller, bytes, .. } = body;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("interchange is not UTF-8"))?;
    let summary = service.import_interchange_as(&caller, text).await?;
    Ok(Json(summary).into_response())
}

/// Middleware: the keymanager API needs a `keymanager` grant.
pub async fn keymanager_guard(
    State(service): State<Arc<SigningService>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with(KEYMANAGER_PREFIX) {
        let caller = Caller::new(
            request.extensions().get::<Arc<ClientIdentity>>().cloned(),
            Api::Rest,
        );
        if let Err(error) = service
            .authorize(&caller, &Target::None, Operation::Keymanager)
            .await
        {
            return ApiError::from(error).into_response();
        }
    }
    next.run(request).await
}
