//! Slashing-protection administration on behalf of a client: EIP-3076 export and import, each
//! authorized per key with the `slashing_admin` operation.
//!
//! Refuses: an export of "all keys" without an all-keys grant, an export or import touching any
//! key the client may not administer (the whole import is refused, nothing is written), and
//! malformed interchange documents (400).
#![forbid(unsafe_code)]

use super::{ServiceError, SigningService};
use crate::service::authz::Caller;
use crate::store::{ImportSummary, StoreError};
use keystake_core::policy::{KeyRef, Operation, Target};
use keystake_core::slashing::interchange::Interchange;
use keystake_core::types::BlsPublicKey;

impl SigningService {
    /// The policy target for a key named in an administrative call: with its group key when it
    /// is a loaded threshold share (so group grants apply), else the bare key.
    pub(crate) fn admin_target(&self, public_key: BlsPublicKey) -> Target {
        let group_public_key = self
            .key_infos()
            .into_iter()
            .find(|k| k.public_key == public_key)
            .and_then(|k| k.group_public_key);
        Target::Key(KeyRef {
            public_key,
            group_public_key,
        })
    }

    /// Export the complete history of `keys` (every key when empty).
    pub async fn export_interchange_as(
        &self,
        caller: &Caller,
        keys: &[BlsPublicKey],
    ) -> Result<Interchange, ServiceError> {
        if keys.is_empty() {
            self.authorize(caller, &Target::AllKeys, Operation::SlashingAdmin)
                .await?;
        } else {
            for key in keys {
                self.authorize(caller, &self.admin_target(*key), Operation::SlashingAdmin)
                    .await?;
            }
        }
        let store = self.store.clone();
        let keys = keys.to_vec();
        run_blocking(move || store.export_interchange((!keys.is_empty()).then_some(&keys[..])))
            .await
    }

    /// Import an interchange document atomically. Every key in it must be administrable by
    /// the client (or the client holds an all-keys grant).
    pub async fn import_interchange_as(
        &self,
        caller: &Caller,
        json: &str,
    ) -> Result<ImportSummary, ServiceError> {
        self.check_known(caller, "slashing_import").await?;
        let interchange =
            Interchange::from_json(json).map_err(|e| ServiceError::Store(e.into()))?;
        if !self
            .authorizer
            .allows(caller, &Target::AllKeys, Operation::SlashingAdmin)
        {
            for record in &interchange.data {
                self.authorize(
                    caller,
                    &self.admin_target(record.pubkey),
                    Operation::SlashingAdmin,
                )
                .await?;
            }
        }
        let store = self.store.clone();
        let summary = run_blocking(move || store.import_interchange(&interchange, None)).await?;
        tracing::info!(client = %caller.name(), validators = summary.validators, "slashing-protection interchange imported");
        Ok(summary)
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ServiceError::TaskFailed)?
        .map_err(ServiceError::from)
}
