//! The `keystake.v1.Dkg` service (proto/keystake/v1/dkg.proto): peers pull the signed messages
//! this appliance holds for a ceremony (its own and relayed ones) from the DKG tables of its
//! database, which `dkg run` writes. And the client side: a channel to one peer over TLS pinned
//! to that peer's certificate (`net::pinned`).
//!
//! Refuses: a caller whose certificate is not pinned by the ceremony's definition
//! (PERMISSION_DENIED — this is the service's authorization; the policy does not name
//! independent operators), an unknown ceremony (NOT_FOUND), a malformed id, phase or sender
//! (INVALID_ARGUMENT).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};

use super::pb;
use crate::net::tls::ClientIdentity;
use crate::store::dkg::DkgStore;
use keystake_core::dkg::{CeremonyId, Phase};
use keystake_core::types::ShareIndex;
use pb::dkg_server::{Dkg, DkgServer};

pub use pb::dkg_client::DkgClient;

/// Largest DKG message (a deal for 10 000 validators to 64 participants is ~200 MB; the
/// supported sizes stay far below this).
pub const MAX_DKG_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Connection timeout to a peer (TCP + TLS + HTTP/2 preface).
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The DKG service as an axum router (`/keystake.v1.Dkg/*`), reading the database at `database`.
pub fn router(database: PathBuf) -> axum::Router {
    let service = DkgServer::new(GrpcDkg {
        database,
        store: Mutex::new(None),
    })
    .max_decoding_message_size(1024)
    .max_encoding_message_size(MAX_DKG_MESSAGE_BYTES);
    tonic::service::Routes::new(service)
        .prepare()
        .into_axum_router()
}

struct GrpcDkg {
    database: PathBuf,
    store: Mutex<Option<Arc<DkgStore>>>,
}

impl GrpcDkg {
    fn store(&self) -> Result<Arc<DkgStore>, Status> {
        let mut slot = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        let store = Arc::new(
            DkgStore::open(&self.database).map_err(|e| Status::unavailable(e.to_string()))?,
        );
        *slot = Some(store.clone());
        Ok(store)
    }
}

#[tonic::async_trait]
impl Dkg for GrpcDkg {
    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let caller = request
            .extensions()
            .get::<Arc<ClientIdentity>>()
            .cloned()
            .ok_or_else(|| Status::permission_denied("no client certificate"))?;
        let item = request.into_inner();
        let id = CeremonyId::from_slice(&item.ceremony_id)
            .map_err(|_| Status::invalid_argument("ceremony_id must be 32 bytes"))?;
        let phase = Phase::from_number(item.phase)
            .ok_or_else(|| Status::invalid_argument(format!("no phase {}", item.phase)))?;
        let sender = ShareIndex::new(item.sender)
            .map_err(|_| Status::invalid_argument("sender must be 1-based"))?;
        let store = self.store()?;
        let found = tokio::task::spawn_blocking(move || {
            let Some(row) = store
                .ceremony(&id)
                .map_err(|e| Status::unavailable(e.to_string()))?
            else {
                return Err(Status::not_found("no such ceremony on this appliance"));
            };
            let pinned = row.definition.participants.iter().any(|p| {
                <[u8; 32]>::from(Sha256::digest(&p.tls_certificate)) == caller.fingerprint_sha256
            });
            if !pinned {
                return Err(Status::permission_denied(
                    "this client certificate is not pinned by the ceremony's definition",
                ));
            }
            store
                .message(&id, phase, sender)
                .map_err(|e| Status::unavailable(e.to_string()))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::FetchResponse {
            found: found.is_some(),
            message_json: found.unwrap_or_default(),
        }))
    }
}

/// A channel to the peer at `endpoint` (`https://host:port`) with `tls` (from
/// [`crate::net::pinned::peer_client_config`]). Connects lazily: a peer that is not up yet is
/// retried by the caller.
pub fn peer_client(
    endpoint: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<DkgClient<Channel>, String> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|_| format!("{endpoint} is not a URI"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{endpoint} has no host"))?
        .to_owned();
    let port = uri
        .port_u16()
        .ok_or_else(|| format!("{endpoint} has no port"))?;
    let server_name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|_| format!("{endpoint}: not a valid server name"))?;
    let connector = TlsConnector::from(tls);
    let address = format!("{host}:{port}");
    let connect = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let address = address.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from(uri)
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(30))
        .connect_with_connector_lazy(connect);
    Ok(DkgClient::new(channel)
        .max_decoding_message_size(MAX_DKG_MESSAGE_BYTES)
        .max_encoding_message_size(1024))
}
