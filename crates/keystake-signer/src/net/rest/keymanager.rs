//! The keymanager API routes, `GET/POST/DELETE /eth/v1/keystores`: a thin adapter over
//! [`crate::service::keymanager::Keymanager`]. Every route checks the bearer token
//! ([`Bearer`], an extractor that runs before the body is read) and then reads the body with
//! the one body extractor of [`super::body`]. Errors answer with the keymanager spec's
//! `{"message": …}` (mapped in `crate::net::error`).
//!
//! Refuses: no token (401), a wrong token (403), keys outside the caller's `keymanager` grant
//! (403, the whole request), bodies over
//! [`super::body::MAX_KEYMANAGER_BODY_BYTES`] (413) or not the JSON object the spec describes
//! (400).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::body::{ClientBody, KeymanagerApi, RestCaller};
use crate::net::error::ApiError;
use crate::service::keymanager::{
    DeleteRequest, ImportRequest, Keymanager, KeymanagerError, StatusEntry,
};

pub fn router(keymanager: Arc<Keymanager>) -> Router {
    Router::new()
        .route("/eth/v1/keystores", get(list).post(import).delete(delete))
        .with_state(keymanager)
}

/// The bearer token checked, before anything else of the request is read.
pub struct Bearer;

impl FromRequestParts<Arc<Keymanager>> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        keymanager: &Arc<Keymanager>,
    ) -> Result<Self, Self::Rejection> {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        keymanager.authorize(authorization)?;
        Ok(Bearer)
    }
}

/// Decode a JSON body; malformed or mis-shaped bodies are a 400 saying what is wrong.
fn decode<T: DeserializeOwned>(body: &ClientBody<KeymanagerApi>) -> Result<T, KeymanagerError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(&body.bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        KeymanagerError::BadRequest(if path == "." {
            format!("invalid request body: {inner}")
        } else {
            format!("{path}: {inner}")
        })
    })
}

async fn list(
    State(keymanager): State<Arc<Keymanager>>,
    RestCaller(caller): RestCaller,
    _: Bearer,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "data": keymanager.list(&caller) })))
}

async fn import(
    State(keymanager): State<Arc<Keymanager>>,
    _: Bearer,
    body: ClientBody<KeymanagerApi>,
) -> Result<Json<Value>, ApiError> {
    let request = decode::<ImportRequest>(&body);
    let caller = body.caller.clone();
    // The body carries the keystore passwords in plain text: wipe it once decoded (issue 17).
    wipe_body(body.bytes);
    let statuses = keymanager.import(&caller, request?).await?;
    let data: Vec<StatusEntry> = statuses.iter().map(StatusEntry::from).collect();
    Ok(Json(json!({ "data": data })))
}

/// Overwrite a request body that carried secrets. The buffer is wiped in place when this is its
/// only owner (the body extractor's collected copy); a buffer still shared cannot be written and
/// is only dropped.
fn wipe_body(bytes: axum::body::Bytes) {
    use zeroize::Zeroize;
    match bytes.try_into_mut() {
        Ok(mut owned) => owned.as_mut().zeroize(),
        Err(shared) => tracing::debug!(
            len = shared.len(),
            "request body still shared; dropped without wiping"
        ),
    }
}

async fn delete(
    State(keymanager): State<Arc<Keymanager>>,
    _: Bearer,
    body: ClientBody<KeymanagerApi>,
) -> Result<Json<Value>, ApiError> {
    let request: DeleteRequest = decode(&body)?;
    let public_keys = request.public_keys()?;
    let outcome = keymanager.delete(&body.caller, &public_keys).await?;
    let data: Vec<StatusEntry> = outcome.statuses.iter().map(StatusEntry::from).collect();
    Ok(Json(json!({
        "data": data,
        "slashing_protection": outcome.slashing_protection,
    })))
}
