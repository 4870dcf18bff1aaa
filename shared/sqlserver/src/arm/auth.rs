//! Bearer tokens for ARM (and for Entra authentication to SQL Server / MI over TDS).
//!
//! Credential crate: **`azure_identity` 1.x**, Microsoft's Azure SDK for Rust — the GA 1.0 line (Nov 2025),
//! maintained in Azure/azure-sdk-for-rust, with exactly the four flows milink needs: `ManagedIdentityCredential`
//! (App Service/Functions `IDENTITY_ENDPOINT` and VM IMDS), `WorkloadIdentityCredential` (AKS federated token
//! file), `AzureCliCredential` (`az account get-access-token`) and `ClientSecretCredential`; sovereign clouds
//! through `ClientOptions::cloud`. It is built without default features (see [`super::transport`] for why) so
//! it adds no second HTTP/TLS stack. The older community `azure_identity` 0.2x line was not considered: it is
//! superseded by the SDK's 1.x.
//!
//! [`TokenSource`] is the narrow trait the ARM client needs; [`StaticToken`] is for the contract server in
//! tests (named as such, it never talks to Entra). Tokens are cached until five minutes before they expire.
//! Tokens and client secrets are [`Secret`]s: never printed, never in an error message.
use super::transport::ReqwestTransport;
use crate::errors;
use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret as AzureSecret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    AzureCliCredential, ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use milink_core::config::Secret;
use milink_core::error::EngineError;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Something that hands out bearer tokens for one audience.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A valid bearer token.
    async fn bearer(&self) -> Result<Secret, EngineError>;
}

/// A fixed token, for the ARM contract server in tests. Never used against Azure.
#[derive(Debug, Clone)]
pub struct StaticToken(pub Secret);

#[async_trait]
impl TokenSource for StaticToken {
    async fn bearer(&self) -> Result<Secret, EngineError> {
        Ok(self.0.clone())
    }
}

/// Which credential flow to use (target option `credential`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// Pick from the environment: workload identity if `AZURE_FEDERATED_TOKEN_FILE` is set, else a client
    /// secret if `AZURE_CLIENT_SECRET` is set, else managed identity if `IDENTITY_ENDPOINT` is set, else the
    /// Azure CLI. Deterministic, so no flow is tried and left to time out.
    Default,
    /// Managed identity, optionally user-assigned by client id.
    ManagedIdentity {
        /// Client id of a user-assigned identity.
        client_id: Option<String>,
    },
    /// Workload identity (federated token file from the environment).
    WorkloadIdentity,
    /// The identity logged in to the Azure CLI.
    AzureCli,
    /// A service principal with a client secret.
    ClientSecret {
        /// Tenant.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The secret.
        secret: Secret,
    },
}

/// Builds the credential for a flow. `authority_host` overrides the Entra endpoint (sovereign clouds).
pub fn credential(
    kind: &CredentialKind,
    http: reqwest::Client,
    authority_host: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn TokenCredential>, EngineError> {
    let mut options = ClientOptions { transport: Some(Transport::new(Arc::new(ReqwestTransport::new(http)))), ..ClientOptions::default() };
    if let Some(host) = authority_host {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.to_owned();
        options.cloud = Some(Arc::new(CloudConfiguration::from(custom)));
    }
    let failed = |flow: &str, error: azure_core::Error| {
        errors::config("credential_unavailable", format!("the {flow} credential cannot be set up: {error}"), "check the target's credential option and the environment variables that flow needs (docs/sqlserver.md)")
    };
    let resolved = match kind {
        CredentialKind::Default => resolve_default(env),
        other => other.clone(),
    };
    let credential: Arc<dyn TokenCredential> = match resolved {
        CredentialKind::ManagedIdentity { client_id } => ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(UserAssignedId::ClientId),
            client_options: options,
        }))
        .map_err(|e| failed("managed identity", e))?,
        CredentialKind::WorkloadIdentity => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions { client_options: options },
            ..Default::default()
        }))
        .map_err(|e| failed("workload identity", e))?,
        CredentialKind::AzureCli => AzureCliCredential::new(None).map_err(|e| failed("Azure CLI", e))?,
        CredentialKind::ClientSecret { tenant_id, client_id, secret } => ClientSecretCredential::new(
            &tenant_id,
            client_id,
            AzureSecret::new(secret.expose().to_owned()),
            Some(ClientSecretCredentialOptions { client_options: options }),
        )
        .map_err(|e| failed("client secret", e))?,
        CredentialKind::Default => unreachable!("resolved above"),
    };
    Ok(credential)
}

fn resolve_default(env: &dyn Fn(&str) -> Option<String>) -> CredentialKind {
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    if set("AZURE_FEDERATED_TOKEN_FILE") {
        CredentialKind::WorkloadIdentity
    } else if set("AZURE_CLIENT_SECRET") && set("AZURE_TENANT_ID") && set("AZURE_CLIENT_ID") {
        CredentialKind::ClientSecret {
            tenant_id: env("AZURE_TENANT_ID").unwrap_or_default(),
            client_id: env("AZURE_CLIENT_ID").unwrap_or_default(),
            secret: Secret::new(env("AZURE_CLIENT_SECRET").unwrap_or_default()),
        }
    } else if set("IDENTITY_ENDPOINT") || set("MSI_ENDPOINT") {
        CredentialKind::ManagedIdentity { client_id: env("AZURE_CLIENT_ID") }
    } else {
        CredentialKind::AzureCli
    }
}

/// Tokens for one scope from an `azure_identity` credential, cached until 5 minutes before expiry.
pub struct AzureTokens {
    credential: Arc<dyn TokenCredential>,
    scope: String,
    cached: Mutex<Option<(Secret, i64)>>,
}

impl AzureTokens {
    /// Tokens for `scope` (e.g. `https://management.azure.com/.default`).
    pub fn new(credential: Arc<dyn TokenCredential>, scope: impl Into<String>) -> Self {
        Self { credential, scope: scope.into(), cached: Mutex::new(None) }
    }
}

#[async_trait]
impl TokenSource for AzureTokens {
    async fn bearer(&self) -> Result<Secret, EngineError> {
        let now = azure_core::time::OffsetDateTime::now_utc().unix_timestamp();
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref() {
            if *expires - 300 > now {
                return Ok(token.clone());
            }
        }
        let token = self.credential.get_token(&[self.scope.as_str()], None).await.map_err(|e| {
            // azure_core errors describe the flow and the HTTP status, never the secret or the token.
            let message = format!("could not get an Entra token for {}: {e}", self.scope);
            let remediation = "check the credential option: managed identity assigned, workload identity env vars, `az login`, or the client secret and tenant";
            match e.kind() {
                azure_core::error::ErrorKind::HttpResponse { status, .. } if matches!(u16::from(*status), 400 | 401 | 403) => {
                    EngineError::definite("token_refused", message, remediation)
                }
                _ => EngineError::transient("token_unavailable", message, remediation),
            }
        })?;
        let secret = Secret::new(token.token.secret().to_owned());
        *cached = Some((secret.clone(), token.expires_on.unix_timestamp()));
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_flow_is_picked_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        assert_eq!(resolve_default(&env(&[("AZURE_FEDERATED_TOKEN_FILE", "/t")])), CredentialKind::WorkloadIdentity);
        assert_eq!(resolve_default(&env(&[("IDENTITY_ENDPOINT", "http://x")])), CredentialKind::ManagedIdentity { client_id: None });
        assert_eq!(resolve_default(&env(&[])), CredentialKind::AzureCli);
        assert!(matches!(
            resolve_default(&env(&[("AZURE_CLIENT_SECRET", "s"), ("AZURE_TENANT_ID", "t"), ("AZURE_CLIENT_ID", "c")])),
            CredentialKind::ClientSecret { .. }
        ));
    }
}
