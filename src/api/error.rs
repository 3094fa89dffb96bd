//! The one place where errors become HTTP statuses and JSON error bodies.
//!
//! Client mistakes get their own status and a message naming what is wrong, and are logged at
//! debug level only. Server-side failures (HSM or database down) get 503 with a generic message
//! and are logged once, with detail, here. 500 is reserved for bugs, never for client input.
#![forbid(unsafe_code)]

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::seal::SealError;
use crate::service::ServiceError;
use crate::store::{Refusal, StoreError};

/// An HTTP error answer: status and JSON body `{"error": …, …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unsupported_media_type(media: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {media:?} is not supported; send application/json"),
        )
    }

    /// A reload of the policy or CRL failed; the administrator needs the reason.
    pub fn reload_failed(message: impl std::fmt::Display) -> Self {
        tracing::error!(%message, "reload failed; the previous policy and TLS configuration stay in force");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed, previous configuration kept: {message}"),
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )
    }
}

/// The status a service error maps to.
pub fn status_of(error: &ServiceError) -> StatusCode {
    match error {
        ServiceError::InvalidIdentifier { .. }
        | ServiceError::BadRequest(_)
        | ServiceError::AmbiguousGroupKey { .. } => StatusCode::BAD_REQUEST,
        ServiceError::UnknownKey { .. } => StatusCode::NOT_FOUND,
        ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
        ServiceError::Refused(_) => StatusCode::PRECONDITION_FAILED,
        ServiceError::Store(StoreError::InvalidData(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        ServiceError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Seal(SealError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Seal(_) | ServiceError::ShareMismatch { .. } | ServiceError::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let status = status_of(&error);
        if status.is_server_error() {
            tracing::error!(%error, status = status.as_u16(), "request failed on the appliance side");
            let message = if status == StatusCode::SERVICE_UNAVAILABLE {
                format!("signer temporarily unavailable: {error}; nothing was signed")
            } else {
                "internal error; nothing was signed (see the appliance log)".to_owned()
            };
            return ApiError::new(status, message);
        }
        tracing::debug!(%error, status = status.as_u16(), "request refused");
        let mut body = json!({ "error": error.to_string() });
        match &error {
            ServiceError::BadRequest(request_error) => {
                if let Some(field) = request_error.field() {
                    body["field"] = json!(field);
                }
            }
            ServiceError::Refused(Refusal::Slashable(not_safe)) => {
                body["rule"] = json!(not_safe.rule());
                body["conflict"] = serde_json::to_value(not_safe).unwrap_or(Value::Null);
            }
            ServiceError::Refused(Refusal::WrongNetwork { expected, received }) => {
                body["rule"] = json!("genesis_validators_root_mismatch");
                body["expected"] = json!(expected.to_hex());
                body["received"] = json!(received.to_hex());
            }
            _ => {}
        }
        ApiError { status, body }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
