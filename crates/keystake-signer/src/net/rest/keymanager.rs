//! The keymanager API routes, `GET/POST/DELETE /eth/v1/keystores`: a thin adapter over
//! [`crate::service::keymanager::Keymanager`]. Every route checks the bearer token before it reads the
//! body. Errors answer with the keymanager spec's `{"message": …}` (mapped in [`super::error`]).
//!
//! Refuses: no token (401), a wrong token (403), bodies over [`MAX_KEYMANAGER_BODY_BYTES`] or
//! not the JSON object the spec describes (400).
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::net::error::ApiError;
use crate::service::keymanager::{
    DeleteRequest, ImportRequest, Keymanager, KeymanagerError, StatusEntry,
};

/// Largest import body: about 16,000 keystores, or fewer with a large interchange.
pub const MAX_KEYMANAGER_BODY_BYTES: usize = 32 * 1024 * 1024;

pub fn router(keymanager: Arc<Keymanager>) -> Router {
    Router::new()
        .route("/eth/v1/keystores", get(list).post(import).delete(delete))
        .with_state(keymanager)
}

fn authorize(keymanager: &Keymanager, headers: &HeaderMap) -> Result<(), KeymanagerError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    keymanager.authorize(authorization)
}

/// Read and decode a JSON body; malformed or mis-shaped bodies are a 400 saying what is wrong.
async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, KeymanagerError> {
    let bytes: Bytes = axum::body::to_bytes(body, MAX_KEYMANAGER_BODY_BYTES)
        .await
        .map_err(|_| {
            KeymanagerError::BadRequest(format!(
                "request body missing, unreadable or larger than {MAX_KEYMANAGER_BODY_BYTES} bytes"
            ))
        })?;
    let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
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
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&keymanager, &headers)?;
    Ok(Json(json!({ "data": keymanager.list() })))
}

async fn import(
    State(keymanager): State<Arc<Keymanager>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&keymanager, &headers)?;
    let request: ImportRequest = json_body(body).await?;
    let statuses = keymanager.import(request).await?;
    let data: Vec<StatusEntry> = statuses.iter().map(StatusEntry::from).collect();
    Ok(Json(json!({ "data": data })))
}

async fn delete(
    State(keymanager): State<Arc<Keymanager>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&keymanager, &headers)?;
    let request: DeleteRequest = json_body(body).await?;
    let public_keys = request.public_keys()?;
    let outcome = keymanager.delete(&public_keys).await?;
    let data: Vec<StatusEntry> = outcome.statuses.iter().map(StatusEntry::from).collect();
    Ok(Json(json!({
        "data": data,
        "slashing_protection": outcome.slashing_protection,
    })))
}
