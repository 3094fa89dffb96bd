//! The Web3Signer eth2 REST API: a thin adapter that reads the request, calls the
//! [`SigningService`] and writes the answer. Error → status mapping lives in [`super::error`].
//!
//! Routes: `GET /upcheck`, `GET /api/v1/eth2/publicKeys`,
//! `GET /api/v1/keystake/keys` (share index, t, n and group key per key),
//! `POST /api/v1/eth2/sign/{identifier}`, the slashing dry run
//! `POST /api/v1/eth2/slashable/{identifier}` (same body as sign; answers whether it would be
//! refused and why, records nothing), and the operator routes of [`super::health`]
//! (`/healthcheck`, `/reload`, `highWatermark`). Bodies are read by the one extractor of
//! [`super::body`]: unknown clients 403 before the body is read, bodies over
//! [`super::body::MAX_BODY_BYTES`] 413, non-JSON content types 415.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::body::{ClientBody, DryRun, RestCaller, Signing};
use crate::net::error::ApiError;
use crate::service::SigningService;
use keystake_core::types::BlsSignature;

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
    RestCaller(caller): RestCaller,
) -> Result<Json<Vec<String>>, ApiError> {
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
    RestCaller(caller): RestCaller,
) -> Result<Json<Vec<crate::service::KeyInfo>>, ApiError> {
    Ok(Json(service.key_infos_for(&caller).await?))
}

/// Web3Signer's Accept rule: JSON when the client accepts `application/json` or `*/*`,
/// otherwise the bare hex signature as text.
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| item.split(';').next().unwrap_or("").trim())
        .any(|media| media.eq_ignore_ascii_case("application/json") || media == "*/*")
}

async fn sign(
    State(service): State<Arc<SigningService>>,
    Path(identifier): Path<String>,
    AcceptsJson(json): AcceptsJson,
    body: ClientBody<Signing>,
) -> Result<Response, ApiError> {
    let signed = service
        .sign_as(&body.caller, &identifier, &body.bytes)
        .await?;
    tracing::debug!(key = %signed.public_key, kind = signed.kind.as_str(), root = %signed.signing_root, "signed");
    Ok(signature_answer(&signed.signature, json))
}

/// A signature as Web3Signer answers it: `{"signature":"0x…"}` for a client that accepts JSON
/// ([`wants_json`]), else the bare hex as text. The one way the appliance and the threshold
/// forwarder write it.
pub(crate) fn signature_answer(signature: &BlsSignature, json: bool) -> Response {
    let signature = signature.to_hex();
    if json {
        // The body written directly: hex digits need no escaping, and a `json!` value would
        // allocate a map, a key and a growing buffer on every signature.
        let mut body = String::with_capacity(signature.len() + 16);
        body.push_str(r#"{"signature":""#);
        body.push_str(&signature);
        body.push_str(r#""}"#);
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            signature,
        )
            .into_response()
    }
}

/// [`wants_json`] of the request, read from its headers in place (the `HeaderMap` extractor
/// copies every header).
struct AcceptsJson(bool);

impl<S: Send + Sync> FromRequestParts<S> for AcceptsJson {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(AcceptsJson(wants_json(&parts.headers)))
    }
}

/// The slashing dry run: 200 with [`crate::service::SlashableAnswer`] whether or not the
/// request would be refused; errors as for signing.
async fn slashable(
    State(service): State<Arc<SigningService>>,
    Path(identifier): Path<String>,
    body: ClientBody<DryRun>,
) -> Result<Response, ApiError> {
    let answer = service
        .check_slashable_as(&body.caller, &identifier, &body.bytes)
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
