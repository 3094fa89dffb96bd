//! The one place where errors become HTTP statuses and JSON error bodies, and gRPC statuses
//! (derived from the HTTP status, so both APIs always agree).
//!
//! Client mistakes get their own status and a message naming what is wrong, and are logged at
//! debug level only. Server-side failures (HSM or database down) get 503 with a generic message
//! and are logged once, with detail, here. 500 is reserved for bugs, never for client input.
#![forbid(unsafe_code)]

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::hsm::SealError;
use crate::net::rest::body::BodyError;
use crate::service::authz::AuthzError;
use crate::service::health::{HealthReport, ReloadBusy};
use crate::service::keymanager::KeymanagerError;
use crate::service::ServiceError;
use crate::store::{Refusal, StoreError};

/// The error body of an API: Web3Signer's and KeyStake's `{"error": …}`, or the keymanager
/// spec's `{"message": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    Web3Signer,
    Keymanager,
}

/// Longest error message sent to a client or logged per refusal: the service's own text
/// around client strings that are already cut to `keystake_core::text::MAX_ECHOED_BYTES`; this
/// is the backstop for any message that was not.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 2048;

fn bounded_message(message: &str) -> String {
    keystake_core::text::bounded(message, MAX_ERROR_MESSAGE_BYTES)
}

/// The status a body that could not be read maps to.
pub fn body_status(error: &BodyError) -> StatusCode {
    match error {
        BodyError::Refused(service) => status_of(service),
        BodyError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
        BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
    }
}

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
            body: json!({ "error": bounded_message(&message.into()) }),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON error body (`{"error": …}` plus detail fields).
    pub fn body(&self) -> &Value {
        &self.body
    }

    /// The message of the body's `error` field.
    pub fn message(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// An invalid argument outside the signing service's own errors (gRPC field decoding).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

/// `POST /reload` was taken on and runs in the background.
pub const ACCEPTED: StatusCode = StatusCode::ACCEPTED;

/// `/healthcheck`: 200 when every check is up, 503 otherwise (Web3Signer's rule).
pub fn health_status(report: &HealthReport) -> StatusCode {
    if report.is_up() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// A reload of the policy or CRL failed; the administrator needs the reason (500: the files
/// on the appliance are at fault, not the request), and the previous configuration stays.
impl From<AuthzError> for ApiError {
    fn from(error: AuthzError) -> Self {
        tracing::error!(%error, "reload failed; the previous policy and TLS configuration stay in force");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed, previous configuration kept: {error}"),
        )
    }
}

/// A reload while one runs: 409 with Web3Signer's body.
impl From<ReloadBusy> for ApiError {
    fn from(_: ReloadBusy) -> Self {
        ApiError {
            status: StatusCode::CONFLICT,
            body: json!({
                "status": "error",
                "message": "A reload operation is already in progress. Please try again later.",
            }),
        }
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
        ServiceError::Combine(_) | ServiceError::FarFuture(_) => StatusCode::BAD_REQUEST,
        ServiceError::Refused(_) => StatusCode::PRECONDITION_FAILED,
        ServiceError::Store(StoreError::InvalidData(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        // An interchange file that cannot be imported is the caller's mistake, not a fault.
        ServiceError::Store(StoreError::GenesisMismatch { .. })
        | ServiceError::Store(StoreError::InvalidInterchange(_)) => StatusCode::BAD_REQUEST,
        ServiceError::Store(StoreError::NotBound)
        | ServiceError::Store(StoreError::SecondKeyOfValidator { .. }) => StatusCode::CONFLICT,
        ServiceError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        // A blob that fails authentication is tampering or a bug: 500, logged. Every other HSM
        // failure (session lost, token gone, PIN refused on re-login) is the HSM being
        // unavailable to us right now: 503, nothing signed, retry later.
        ServiceError::Seal(SealError::Integrity | SealError::MalformedBlob(_))
        | ServiceError::InvalidUnsealedShare { .. }
        | ServiceError::SealRoundTripMismatch
        | ServiceError::KeyIndexOutOfStep { .. }
        | ServiceError::TaskFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        // A key being deleted while an HSM call hangs: the deletion took effect, retry later.
        ServiceError::DrainTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Seal(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl ApiError {
    /// A body that could not be read, in the route's error shape.
    pub fn from_body(error: BodyError, shape: ErrorShape) -> Self {
        let status = body_status(&error);
        match (error, shape) {
            (BodyError::Refused(service), ErrorShape::Web3Signer) => ApiError::from(service),
            (BodyError::Refused(service), ErrorShape::Keymanager) => {
                ApiError::from(KeymanagerError::Service(service))
            }
            (error, ErrorShape::Web3Signer) => ApiError::new(status, error.to_string()),
            // The keymanager specification knows 400, 401, 403 and 500 only.
            (error, ErrorShape::Keymanager) => ApiError {
                status: StatusCode::BAD_REQUEST,
                body: json!({ "message": error.to_string() }),
            },
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
        let message = bounded_message(&error.to_string());
        tracing::debug!(error = %message, status = status.as_u16(), "request refused");
        let mut body = json!({ "error": message });
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

/// The status a keymanager API error maps to (its spec: 400, 401, 403, 500).
pub fn keymanager_status_of(error: &KeymanagerError) -> StatusCode {
    match error {
        KeymanagerError::MissingToken => StatusCode::UNAUTHORIZED,
        KeymanagerError::WrongToken => StatusCode::FORBIDDEN,
        KeymanagerError::BadRequest(_) => StatusCode::BAD_REQUEST,
        KeymanagerError::Service(service) => status_of(service),
        KeymanagerError::Ungranted(_) => StatusCode::FORBIDDEN,
        KeymanagerError::TokenFile { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Keymanager errors use the keymanager spec's body, `{"message": …}`.
impl From<KeymanagerError> for ApiError {
    fn from(error: KeymanagerError) -> Self {
        let status = keymanager_status_of(&error);
        let message = if status.is_server_error() {
            tracing::error!(%error, status = status.as_u16(), "keymanager request failed on the appliance side");
            format!("keymanager operation failed on the appliance: {error}")
        } else {
            let message = bounded_message(&error.to_string());
            tracing::debug!(error = %message, status = status.as_u16(), "keymanager request refused");
            message
        };
        ApiError {
            status,
            body: json!({ "message": message }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The gRPC code for an HTTP status of this API.
pub fn grpc_code(status: StatusCode) -> tonic::Code {
    match status.as_u16() {
        200..=299 => tonic::Code::Ok,
        400 | 413 | 415 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 | 412 => tonic::Code::FailedPrecondition,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        tonic::Status::new(grpc_code(error.status), error.message().to_owned())
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(error: ServiceError) -> Self {
        ApiError::from(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystake_core::policy::Denial;

    #[test]
    fn grpc_codes_follow_http_statuses() {
        use tonic::Code;
        let unknown_key = ServiceError::UnknownKey {
            identifier: "0x".into(),
        };
        let bad_identifier = ServiceError::InvalidIdentifier {
            identifier: "x".into(),
        };
        let cases = [
            (unknown_key, StatusCode::NOT_FOUND, Code::NotFound),
            (
                ServiceError::Forbidden(Denial::NoIdentity),
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
            ),
            (
                bad_identifier,
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
            ),
            (
                ServiceError::Store(StoreError::WriterGone),
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
            ),
            (
                ServiceError::SealRoundTripMismatch,
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
        ];
        for (error, http, grpc) in cases {
            assert_eq!(status_of(&error), http);
            assert_eq!(tonic::Status::from(error).code(), grpc);
        }
        assert_eq!(
            grpc_code(StatusCode::PRECONDITION_FAILED),
            tonic::Code::FailedPrecondition
        );
    }
}
