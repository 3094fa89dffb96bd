//! Why a request could not be forwarded, and the forwarder's own mapping of that to HTTP
//! statuses and JSON error bodies (`{"error": …}`, as the appliance answers): the appliance down
//! or unreachable is temporary (503), a certificate refused either way or a broken exchange is a
//! gateway fault (502), no answer in time is 504, an oversized body 413, a request that cannot
//! be forwarded as it is 400, a web page or a DNS-rebinding host 403. The threshold forwarder
//! adds 404 (no such validator or endpoint) and its verdicts when no combination was possible:
//! 412 (too many slashing refusals), 503 (too few appliances answered), 502 (a mix without
//! unreachable appliances), each with every appliance's outcome in the body (`appliances`) and
//! the invalid partials' indices in `X-KeyStake-Culprits`. The forwarder never answers with the
//! appliance's error types.
#![forbid(unsafe_code)]

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

use super::threshold::Verdict;
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
    #[error("refused: {0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{}", .0.summary)]
    NotCombined(Box<NotCombined>),
}

/// Why the threshold forwarder could not combine, appliance by appliance.
#[derive(Debug)]
pub struct NotCombined {
    pub verdict: Verdict,
    /// One line naming every appliance that did not contribute and why.
    pub summary: String,
    pub appliances: Vec<ApplianceReport>,
    /// Share indices whose partials did not verify.
    pub culprits: Vec<u32>,
}

/// One appliance's outcome for one request.
#[derive(Debug, serde::Serialize)]
pub struct ApplianceReport {
    pub index: u32,
    pub url: String,
    /// `signed`, `refused`, `unreachable`, `invalid_partial`, `failed` or `not_awaited`.
    pub outcome: &'static str,
    pub detail: String,
}

impl ForwardError {
    /// Whether the fault lies with the appliance or the link to it (logged), rather than with the
    /// local client's request (not logged as a warning).
    pub fn is_upstream(&self) -> bool {
        !matches!(
            self,
            ForwardError::BodyTooLarge { .. }
                | ForwardError::BadRequest(_)
                | ForwardError::Forbidden(_)
                | ForwardError::NotFound(_)
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
            ForwardError::Forbidden(_) => "browser request refused",
            ForwardError::NotFound(_) => "not found",
            ForwardError::NotCombined(_) => "no combination",
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
        ForwardError::Forbidden(_) => StatusCode::FORBIDDEN,
        ForwardError::NotFound(_) => StatusCode::NOT_FOUND,
        ForwardError::NotCombined(not) => match not.verdict {
            Verdict::SlashingRefused => StatusCode::PRECONDITION_FAILED,
            Verdict::Unavailable
            | Verdict::Mixed {
                any_unreachable: true,
            } => StatusCode::SERVICE_UNAVAILABLE,
            Verdict::Mixed {
                any_unreachable: false,
            } => StatusCode::BAD_GATEWAY,
        },
    }
}

impl IntoResponse for ForwardError {
    fn into_response(self) -> Response {
        let status = forward_status(&self);
        let mut body = serde_json::json!({ "error": self.to_string() });
        let mut culprits = None;
        if let ForwardError::NotCombined(not) = &self {
            body["appliances"] = serde_json::json!(not.appliances);
            if !not.culprits.is_empty() {
                let list: Vec<String> = not.culprits.iter().map(u32::to_string).collect();
                culprits = http::HeaderValue::from_str(&list.join(",")).ok();
            }
        }
        let mut response = (status, Json(body)).into_response();
        if let Some(value) = culprits {
            response
                .headers_mut()
                .insert(super::threshold::CULPRITS_HEADER, value);
        }
        response
    }
}
