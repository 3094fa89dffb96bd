//! Why a request could not be forwarded, and the forwarder's own mapping of that to HTTP
//! statuses and JSON error bodies (`{"error": …}`, as the appliance answers): the appliance down
//! or unreachable is temporary (503), a certificate refused either way or a broken exchange is a
//! gateway fault (502), no answer in time is 504, an oversized body 413, a request that cannot
//! be forwarded as it is 400. The forwarder never answers with the appliance's error types.
#![forbid(unsafe_code)]

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

use crate::net::client::{ClientError, FailureKind};

/// Why one request could not be forwarded. Statuses: [`forward_status`].
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("appliance {upstream} is unreachable: {detail}; nothing was signed")]
    Unreachable { upstream: String, detail: String },
    #[error(
        "appliance {upstream} refused this forwarder's client certificate ({detail}); check that \
         --client-cert was issued by the appliance's CA, is valid and not revoked; nothing was signed"
    )]
    CertificateRefused { upstream: String, detail: String },
    #[error(
        "the certificate of appliance {upstream} is not trusted ({detail}); check --ca and the \
         host name in --upstream; nothing was signed"
    )]
    ServerCertificateRejected { upstream: String, detail: String },
    #[error("appliance {upstream} did not answer within {timeout:?}")]
    Timeout { upstream: String, timeout: Duration },
    #[error("exchange with appliance {upstream} failed: {detail}")]
    Broken { upstream: String, detail: String },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("cannot forward the request: {0}")]
    BadRequest(String),
}

impl ForwardError {
    /// Whether the fault lies with the appliance or the link to it (logged), rather than with the
    /// local client's request (not logged as a warning).
    pub fn is_upstream(&self) -> bool {
        !matches!(
            self,
            ForwardError::BodyTooLarge { .. } | ForwardError::BadRequest(_)
        )
    }

    pub(super) fn from_client(upstream: &str, error: ClientError) -> Self {
        let upstream = upstream.to_owned();
        match error {
            ClientError::Timeout { timeout, .. } => ForwardError::Timeout { upstream, timeout },
            ClientError::Request { detail, kind, .. } => match kind {
                FailureKind::Connect => ForwardError::Unreachable { upstream, detail },
                FailureKind::ClientCertificateRefused => {
                    ForwardError::CertificateRefused { upstream, detail }
                }
                FailureKind::ServerCertificateRejected => {
                    ForwardError::ServerCertificateRejected { upstream, detail }
                }
                FailureKind::Other => ForwardError::Broken { upstream, detail },
            },
            ClientError::InvalidPath { path, reason } => {
                ForwardError::BadRequest(format!("path {path:?}: {reason}"))
            }
            ClientError::InvalidHeader { name, reason } => {
                ForwardError::BadRequest(format!("header {name:?}: {reason}"))
            }
            other => ForwardError::Broken {
                upstream,
                detail: other.to_string(),
            },
        }
    }

    /// A short name of the cause for the log line.
    pub(super) fn cause(&self) -> &'static str {
        match self {
            ForwardError::Unreachable { .. } => "appliance unreachable",
            ForwardError::CertificateRefused { .. } => "appliance refused the client certificate",
            ForwardError::ServerCertificateRejected { .. } => "appliance certificate not trusted",
            ForwardError::Timeout { .. } => "appliance timed out",
            ForwardError::Broken { .. } => "upstream exchange failed",
            ForwardError::BodyTooLarge { .. } => "request body too large",
            ForwardError::BadRequest(_) => "request cannot be forwarded",
        }
    }
}

/// The status a forwarder failure maps to.
pub fn forward_status(error: &ForwardError) -> StatusCode {
    match error {
        ForwardError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ForwardError::CertificateRefused { .. }
        | ForwardError::ServerCertificateRejected { .. }
        | ForwardError::Broken { .. } => StatusCode::BAD_GATEWAY,
        ForwardError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        ForwardError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ForwardError::BadRequest(_) => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ForwardError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (forward_status(&self), Json(body)).into_response()
    }
}
