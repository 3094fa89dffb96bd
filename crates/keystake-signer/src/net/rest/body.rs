//! The one way a REST handler learns who is calling and reads a request body.
//!
//! [`RestCaller`] turns the client identity the accept loop attached into a [`Caller`].
//! [`ClientBody`] does, in this order: admit the caller (a client the policy does not name is
//! refused, audited and counted **before a byte of its body is read**), check the content type
//! where the route demands JSON, then read the body within a size limit and a time limit. The
//! rules of each kind of route — limit, content type, what an admission refusal is recorded as,
//! the shape of the error body — are a [`BodyRules`] type, so no handler reads a body its own way.
//!
//! Refuses: unknown clients and clients named with no grant (403), clients without any grant
//! of the route's operation (403, operator and keymanager routes), a missing or non-JSON
//! `Content-Type` on routes that demand JSON (415),
//! bodies over the route's limit (413), bodies that do not arrive within the route's time
//! ([`BODY_READ_TIMEOUT`], 408), bodies the client breaks off (400). The keymanager API answers
//! every unreadable body with 400, the only client error its specification has besides 401/403.
#![forbid(unsafe_code)]

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use crate::net::error::{ApiError, ErrorShape};
use crate::net::tls::ClientIdentity;
use crate::service::authz::{Api, Caller};
use crate::service::keymanager::Keymanager;
use crate::service::sign::Admission;
use crate::service::{ServiceError, SigningService};
use keystake_core::policy::{Operation, Target};

/// Largest signing request body. A full Electra block body is far below this.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest keymanager import body: about 16,000 keystores, or fewer with a large interchange.
pub const MAX_KEYMANAGER_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest operator body (an EIP-3076 interchange; what these routes always accepted).
pub const MAX_OPERATOR_BODY_BYTES: usize = 2 * 1024 * 1024;
/// A slow client gets this long to send a signing or operator body (headers are bounded by the
/// connection).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A keymanager import may be tens of MiB from a remote host: it gets longer.
pub const KEYMANAGER_BODY_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Refused(#[from] ServiceError),
    #[error("content type {0:?} is not supported; send application/json")]
    UnsupportedMediaType(String),
    #[error("the request body did not arrive in time")]
    Timeout,
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot read the request body: {0}")]
    Unreadable(axum::Error),
}

/// A [`BodyError`] answered in the error-body shape of the route's API.
#[derive(Debug)]
pub struct BodyRejection {
    pub error: BodyError,
    pub shape: ErrorShape,
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        ApiError::from_body(self.error, self.shape).into_response()
    }
}

/// A router state through which the signing service can be reached.
pub trait RestState: Send + Sync {
    fn service(&self) -> &Arc<SigningService>;
}

impl RestState for Arc<SigningService> {
    fn service(&self) -> &Arc<SigningService> {
        self
    }
}

impl RestState for Arc<Keymanager> {
    fn service(&self) -> &Arc<SigningService> {
        Keymanager::service(self)
    }
}

/// The rules of one kind of route (defaults: a Web3Signer-shaped error body, any content type,
/// [`BODY_READ_TIMEOUT`]).
pub trait BodyRules: Send + Sync + 'static {
    /// Largest body accepted.
    const LIMIT: usize;
    /// How long the body may take to arrive.
    const TIMEOUT: Duration = BODY_READ_TIMEOUT;
    /// Refuse a `Content-Type` other than `application/json`, and an absent one (Web3Signer
    /// accepts that; a browser can send it cross-origin without a preflight).
    const JSON_ONLY: bool = false;
    /// The shape of the error body.
    const SHAPE: ErrorShape = ErrorShape::Web3Signer;
    /// What an unknown client's refusal is recorded as (audit entry, metrics): this operation,
    /// or, for `None`, a signing request for the route's `{identifier}`.
    const OPERATION: Option<&'static str>;
    /// An operation the caller must hold on some key before its body is read (the per-key
    /// decision comes after): a client without any such grant is refused on its headers.
    const NEEDS: Option<Operation> = None;
}

fn admission<R: BodyRules>(parts: &Parts) -> Admission {
    match R::OPERATION {
        Some(operation) => Admission::Operation(operation),
        None => Admission::Signing {
            identifier: last_segment(parts),
        },
    }
}

/// `POST /api/v1/eth2/sign/{identifier}`.
pub struct Signing;
/// `POST /api/v1/eth2/slashable/{identifier}`.
pub struct DryRun;
/// KeyStake's operator routes (`/keystake/v1/admin/…`).
pub struct Operator;
/// The keymanager API (`/eth/v1/keystores`).
pub struct KeymanagerApi;

/// The `{identifier}` of a `…/{identifier}` route, as the client sent it.
fn last_segment(parts: &Parts) -> String {
    parts
        .uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

impl BodyRules for Signing {
    const LIMIT: usize = MAX_BODY_BYTES;
    const JSON_ONLY: bool = true;
    const OPERATION: Option<&'static str> = None;
}

impl BodyRules for DryRun {
    const LIMIT: usize = MAX_BODY_BYTES;
    const JSON_ONLY: bool = true;
    const OPERATION: Option<&'static str> = Some("slashing_dry_run");
}

impl BodyRules for Operator {
    const LIMIT: usize = MAX_OPERATOR_BODY_BYTES;
    const OPERATION: Option<&'static str> = Some("operator");
    const NEEDS: Option<Operation> = Some(Operation::SlashingAdmin);
}

impl BodyRules for KeymanagerApi {
    const NEEDS: Option<Operation> = Some(Operation::Keymanager);
    const LIMIT: usize = MAX_KEYMANAGER_BODY_BYTES;
    const TIMEOUT: Duration = KEYMANAGER_BODY_READ_TIMEOUT;
    const SHAPE: ErrorShape = ErrorShape::Keymanager;
    const OPERATION: Option<&'static str> = Some("keymanager");
}

/// The caller of a REST request: the client identity the accept loop attached (absent only in
/// socket-less router tests).
pub struct RestCaller(pub Caller);

fn caller_of(parts: &Parts) -> Caller {
    Caller::new(
        parts.extensions.get::<Arc<ClientIdentity>>().cloned(),
        Api::Rest,
    )
}

impl<S: Send + Sync> FromRequestParts<S> for RestCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RestCaller(caller_of(parts)))
    }
}

/// An admitted caller and the body it sent, read under the rules `R`.
pub struct ClientBody<R> {
    pub caller: Caller,
    pub bytes: Bytes,
    rules: PhantomData<R>,
}

impl<S: RestState, R: BodyRules> FromRequest<S> for ClientBody<R> {
    type Rejection = BodyRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let reject = |error| BodyRejection {
            error,
            shape: R::SHAPE,
        };
        let (parts, body) = request.into_parts();
        let caller = caller_of(&parts);
        state
            .service()
            .admit(&caller, admission::<R>(&parts))
            .await
            .map_err(|e| reject(e.into()))?;
        if let Some(operation) = R::NEEDS {
            if !state.service().authorizer().may_ever(&caller, operation) {
                // Decided again through the path that audits and counts the refusal.
                state
                    .service()
                    .authorize(&caller, &Target::None, operation)
                    .await
                    .map_err(|e| reject(e.into()))?;
            }
        }
        if R::JSON_ONLY {
            check_content_type(&parts.headers).map_err(reject)?;
        }
        let bytes = read_limited(body, R::LIMIT, R::TIMEOUT)
            .await
            .map_err(reject)?;
        Ok(ClientBody {
            caller,
            bytes,
            rules: PhantomData,
        })
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), BodyError> {
    // Absent is refused too: a web page can send a "simple" cross-origin POST without a
    // preflight only as text/plain, form data or with no type; JSON needs the header.
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(BodyError::UnsupportedMediaType(String::new()));
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
        Err(BodyError::UnsupportedMediaType(media.to_owned()))
    }
}

async fn read_limited(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
            let mut too_large = false;
            while let Some(current) = cause {
                too_large |= current.is::<http_body_util::LengthLimitError>();
                cause = current.source();
            }
            if too_large {
                Err(BodyError::TooLarge { limit })
            } else {
                Err(BodyError::Unreadable(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_and_content_types() {
        let small = read_limited(Body::from("{}"), 8, BODY_READ_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(&small[..], b"{}");
        let large = read_limited(Body::from(vec![b'x'; 9]), 8, BODY_READ_TIMEOUT).await;
        assert!(matches!(large, Err(BodyError::TooLarge { limit: 8 })));

        let mut headers = HeaderMap::new();
        assert!(check_content_type(&headers).is_err(), "absent: 415");
        headers.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert!(check_content_type(&headers).is_ok());
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(matches!(
            check_content_type(&headers),
            Err(BodyError::UnsupportedMediaType(ref m)) if m == "text/plain"
        ));
    }
}
