//! A Rust client for the KeyStake gRPC API over mutual TLS, built on the generated tonic stubs.
//!
//! TLS comes from [`crate::net::tls::client_config`] (TLS 1.3, trusts only the appliance CA, presents
//! the client certificate); this module only adds ALPN `h2` and a connector, so the client and
//! the server share the one `tls` module. Refuses URLs that are not `https://host:port`.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Status;

use crate::net::grpc::pb;
use crate::net::grpc::MAX_MESSAGE_BYTES;
use crate::net::tls::ALPN_H2;
use pb::admin_client::AdminClient;
use pb::signer_client::SignerClient;

#[derive(Debug, thiserror::Error)]
pub enum GrpcClientError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
}

/// Connection timeout (TCP + TLS + HTTP/2 preface).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected gRPC client. Cheap to clone; calls on clones share one HTTP/2 connection.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    signer: SignerClient<Channel>,
    admin: AdminClient<Channel>,
}

impl GrpcClient {
    /// Connect to `url` (`https://host:port`, e.g. the URL `serve` prints) with `tls` (a client
    /// configuration from [`crate::net::tls::client_config`]).
    pub async fn connect(
        url: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<GrpcClient, GrpcClientError> {
        let bad = |reason: &str| GrpcClientError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URI"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the gRPC API is only served over TLS: use https://"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_owned();
        let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
        let server_name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|_| bad("host is not a valid server name"))?;

        let mut config = (*tls).clone();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        let connector = TlsConnector::from(Arc::new(config));
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
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(connect)
            .await?;
        Ok(GrpcClient {
            signer: SignerClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            admin: AdminClient::new(channel),
        })
    }

    /// The generated Signer stub, for calls this wrapper does not cover.
    pub fn signer(&self) -> SignerClient<Channel> {
        self.signer.clone()
    }

    /// The generated Admin stub.
    pub fn admin(&self) -> AdminClient<Channel> {
        self.admin.clone()
    }

    /// Sign one Web3Signer request body with the key `identifier`.
    pub async fn sign(
        &self,
        identifier: &str,
        json_body: &str,
    ) -> Result<pb::SignResponse, Status> {
        Ok(self
            .signer()
            .sign(sign_request(identifier, json_body))
            .await?
            .into_inner())
    }

    /// Sign many (identifier, body) pairs; one result per item, in order.
    pub async fn sign_batch(
        &self,
        items: &[(String, String)],
    ) -> Result<Vec<Result<pb::SignResponse, pb::Error>>, Status> {
        let response = self
            .signer()
            .sign_batch(pb::SignBatchRequest {
                items: items
                    .iter()
                    .map(|(identifier, json_body)| sign_request(identifier, json_body))
                    .collect(),
            })
            .await?
            .into_inner();
        response
            .results
            .into_iter()
            .map(|result| match result.outcome {
                Some(pb::sign_result::Outcome::Signed(signed)) => Ok(Ok(signed)),
                Some(pb::sign_result::Outcome::Error(error)) => Ok(Err(error)),
                None => Err(Status::internal("batch result without an outcome")),
            })
            .collect()
    }

    pub async fn list_keys(&self) -> Result<Vec<pb::KeyInfo>, Status> {
        Ok(self
            .signer()
            .list_keys(pb::ListKeysRequest {})
            .await?
            .into_inner()
            .keys)
    }

    pub async fn health(&self) -> Result<pb::HealthResponse, Status> {
        Ok(self
            .signer()
            .health(pb::HealthRequest {})
            .await?
            .into_inner())
    }

    pub async fn check_slashing(
        &self,
        identifier: &str,
        json_body: &str,
    ) -> Result<pb::CheckSlashingResponse, Status> {
        Ok(self
            .signer()
            .check_slashing(sign_request(identifier, json_body))
            .await?
            .into_inner())
    }

    pub async fn combine(
        &self,
        request: pb::CombineRequest,
    ) -> Result<pb::CombineResponse, Status> {
        Ok(self.signer().combine(request).await?.into_inner())
    }

    /// Export slashing protection (EIP-3076 JSON) for `public_keys` (all keys when empty).
    pub async fn export_slashing_protection(
        &self,
        public_keys: &[Vec<u8>],
    ) -> Result<String, Status> {
        Ok(self
            .admin()
            .export_slashing_protection(pb::ExportSlashingProtectionRequest {
                public_keys: public_keys.to_vec(),
            })
            .await?
            .into_inner()
            .interchange_json)
    }

    /// Import an EIP-3076 document.
    pub async fn import_slashing_protection(
        &self,
        interchange_json: &str,
    ) -> Result<pb::ImportSlashingProtectionResponse, Status> {
        Ok(self
            .admin()
            .import_slashing_protection(pb::ImportSlashingProtectionRequest {
                interchange_json: interchange_json.to_owned(),
            })
            .await?
            .into_inner())
    }

    pub async fn reload_policy(&self) -> Result<pb::ReloadPolicyResponse, Status> {
        Ok(self
            .admin()
            .reload_policy(pb::ReloadPolicyRequest {})
            .await?
            .into_inner())
    }
}

/// The request `Sign`, `SignBatch` (per item) and `CheckSlashing` carry.
fn sign_request(identifier: &str, json_body: &str) -> pb::SignRequest {
    pb::SignRequest {
        identifier: identifier.to_owned(),
        json_body: json_body.to_owned(),
    }
}
