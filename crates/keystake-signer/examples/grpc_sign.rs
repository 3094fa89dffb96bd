//! Sign the demo attestation over gRPC with the crate's client, then show the keys and the
//! health the appliance reports.
//!
//! ```text
//! ./scripts/demo.sh --no-serve && ./target/debug/keystake-signer serve --config demo/signer.toml &
//! cargo run --example grpc_sign -- demo/signer.toml
//! ```
//!
//! Uses the `[client]` certificate of the configuration and its `listen` address.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use keystake_signer::cli::demo::DEMO_ATTESTATION;
use keystake_signer::config::Config;
use keystake_signer::net::tls;
use keystake_signer::tools::grpc_client::GrpcClient;

#[tokio::main]
async fn main() -> Result<()> {
    let config_path = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: grpc_sign <signer.toml>")?,
    );
    let config = Config::load(&config_path)?;
    let client = config
        .client
        .as_ref()
        .context("the configuration has no [client] section (cert, key)")?;
    let tls = tls::client_config(&config.tls.ca_cert, &client.cert, &client.key)?;
    let url = format!("https://{}", config.listen);
    let grpc = GrpcClient::connect(&url, tls)
        .await
        .with_context(|| format!("connecting to {url}"))?;

    let health = grpc.health().await?;
    println!(
        "healthy: {} ({} keys loaded)",
        health.up, health.keys_loaded
    );
    let keys = grpc.list_keys().await?;
    for key in &keys {
        println!("key 0x{}", hex::encode(&key.public_key));
    }
    let first = keys.first().context("no key this client may use")?;
    let identifier = format!("0x{}", hex::encode(&first.public_key));
    match grpc.sign(&identifier, DEMO_ATTESTATION).await {
        Ok(signed) => println!(
            "{} signed, root 0x{}: signature 0x{}",
            signed.kind,
            hex::encode(&signed.signing_root),
            hex::encode(&signed.signature)
        ),
        Err(status) => println!("refused: {:?} {}", status.code(), status.message()),
    }
    Ok(())
}
