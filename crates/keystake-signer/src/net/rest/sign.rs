//! The Web3Signer eth2 REST API: a thin adapter that reads the request, calls the
//! [`SigningService`] and writes the answer. Error → status mapping lives in [`super::error`].
//!
//! Routes: `GET /upcheck`, `GET /api/v1/eth2/publicKeys`,
//! `GET /api/v1/keystake/keys` (share index, t, n and group key per key),
//! `POST /api/v1/eth2/sign/{identifier}`, the slashing dry run
//! `POST /api/v1/eth2/slashable/{identifier}` (same body as sign; answers whether it would be
//! refused and why, records nothing), and the operator routes of [`super::health`]
//! (`/healthcheck`, `/reload`, `highWatermark`). Refuses bodies over [`MAX_BODY_BYTES`] (413)
//! and non-JSON content types (415).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use serde_json::json;

use crate::net::error::ApiError;
use crate::net::tls::ClientIdentity;
use crate::service::authz::{Api, Caller};
use crate::service::SigningService;

/// The caller of a REST request: the client identity the accept loop attached (absent only in
/// socket-less router tests).
fn rest_caller(identity: Option<Extension<ClientIdentity>>) -> Caller {
    Caller::new(identity.map(|Extension(i)| i), Api::Rest)
}

/// Largest accepted request body. A full Electra block body is far below this.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The REST router over a shared service. A function, so tests can drive it without a socket.
pub fn router(service: Arc<SigningService>) -> Router {
    Router::new()
        .route("/upcheck", get(upcheck))
        .route("/api/v1/eth2/publicKeys", get(public_keys))
        .route("/api/v1/keystake/keys", get(key_infos))
        .route("/api/v1/eth2/sign/{identifier}", post(sign))
        .route("/api/v1/eth2/slashable/{identifier}", post(slashable))
        .with_state(service.clone())
        .merge(super::health::router(service))
        .fallback(not_found)
}

async fn upcheck() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK")
}

async fn not_found() -> Response {
    ApiError::not_found("no such endpoint").into_response()
}

/// The keys this client may use (every key without a policy); 403 for a client the policy
/// does not name.
async fn public_keys(
    State(service): State<Arc<SigningService>>,
    identity: Option<Extension<ClientIdentity>>,
) -> Result<Json<Vec<String>>, ApiError> {
    let caller = rest_caller(identity);
    Ok(Json(
        service
            .key_infos_for(&caller)
            .await?
            .iter()
            .map(|k| k.public_key.to_hex())
            .collect::<Vec<_>>(),
    ))
}

/// KeyStake's own listing: every key with its share index, threshold, number of shares and group
/// public key (threshold shares only; whole keys list just `public_key`).
async fn key_infos(
    State(service): State<Arc<SigningService>>,
    identity: Option<Extension<ClientIdentity>>,
) -> Result<Json<Vec<crate::service::KeyInfo>>, ApiError> {
    Ok(Json(service.key_infos_for(&rest_caller(identity)).await?))
}

/// A slow client gets this long to send its body (headers are bounded by the connection).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Read a request body: 413 over [`MAX_BODY_BYTES`], 408 when it does not arrive within
/// [`BODY_READ_TIMEOUT`], 400 when the client breaks it off.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Err(_) => Err(ApiError::request_timeout()),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
            let mut too_large = false;
            while let Some(current) = cause {
                too_large |= current.is::<http_body_util::LengthLimitError>();
                cause = current.source();
            }
            if too_large {
                Err(ApiError::payload_too_large(MAX_BODY_BYTES))
            } else {
                Err(ApiError::bad_body(&error.to_string()))
            }
        }
    }
}

/// Web3Signer's Accept rule: JSON when the client accepts `application/json` or `*/*`,
/// otherwise the bare hex signature as text.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| item.split(';').next().unwrap_or("").trim())
        .any(|media| media.eq_ignore_ascii_case("application/json") || media == "*/*")
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(media))
    }
}

async fn sign(
    State(service): State<Arc<SigningService>>,
    Path(identifier): Path<String>,
    identity: Option<Extension<ClientIdentity>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = rest_caller(identity);
    check_content_type(&headers)?;
    let body = read_body(body).await?;
    let signed = service.sign_as(&caller, &identifier, &body).await?;
    tracing::debug!(key = %signed.public_key, kind = signed.kind.as_str(), root = %signed.signing_root, "signed");
    let signature = signed.signature.to_hex();
    Ok(if wants_json(&headers) {
        Json(json!({ "signature": signature })).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            signature,
        )
            .into_response()
    })
}

/// The slashing dry run: 200 with [`crate::service::SlashableAnswer`] whether or not the
/// request would be refused; errors as for signing.
async fn slashable(
    State(service): State<Arc<SigningService>>,
    Path(identifier): Path<String>,
    identity: Option<Extension<ClientIdentity>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = rest_caller(identity);
    check_content_type(&headers)?;
    let body = read_body(body).await?;
    let answer = service
        .check_slashable_as(&caller, &identifier, &body)
        .await?;
    Ok(Json(answer).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, accept.parse().unwrap());
        h
    }

    #[test]
    fn accept_rule() {
        assert!(wants_json(&headers("application/json")));
        assert!(wants_json(&headers("*/*")));
        assert!(wants_json(&headers("text/plain;q=0.5, application/json")));
        assert!(!wants_json(&headers("text/plain")));
        assert!(!wants_json(&HeaderMap::new()));
    }
}
