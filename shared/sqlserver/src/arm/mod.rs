//! The managed instance side of the link, over ARM REST.
//!
//! [`ManagedInstanceApi`] is the narrow port the engine composes: the handful of operations on the MI's
//! `distributedAvailabilityGroups`, `serverTrustCertificates`, `endpointCertificates` and the instance
//! itself. [`ManagedInstanceArm`] implements it with [`client::ArmClient`] (plain reqwest, LRO polling) and
//! the bodies of [`models`]; the tests run it against a local contract server serving Microsoft's examples.
use crate::errors;
use crate::names::encode_path_segment;
use async_trait::async_trait;
use milink_core::error::EngineError;
use models::{DistributedAvailabilityGroup, EndpointCertificate, LinkResourceSpec, ManagedInstance, ServerTrustCertificate, API_VERSION};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub mod auth;
pub mod client;
mod lro;
pub mod models;
pub mod transport;

/// What the engine does on the managed instance.
#[async_trait]
pub trait ManagedInstanceApi: Send + Sync {
    /// The instance (FQDN, update policy, tier, storage, collation).
    async fn instance(&self) -> Result<ManagedInstance, EngineError>;
    /// A link, `None` when it does not exist.
    async fn link(&self, name: &str) -> Result<Option<DistributedAvailabilityGroup>, EngineError>;
    /// Every link on the instance.
    async fn links(&self) -> Result<Vec<DistributedAvailabilityGroup>, EngineError>;
    /// Creates a link (the MI joins the distributed AG) and waits for the operation.
    async fn create_link(&self, name: &str, spec: &LinkResourceSpec) -> Result<(), EngineError>;
    /// Switches the link to synchronous or asynchronous replication.
    async fn set_replication_mode(&self, name: &str, synchronous: bool) -> Result<(), EngineError>;
    /// Fails the link over (planned: only while the MI is primary — failback).
    async fn failover(&self, name: &str, planned: bool) -> Result<(), EngineError>;
    /// Sets the MI's role in the link.
    async fn set_role(&self, name: &str, primary: bool, forced: bool) -> Result<(), EngineError>;
    /// Deletes the link (the MI database becomes independent and read/write).
    async fn delete_link(&self, name: &str) -> Result<(), EngineError>;
    /// Every server trust certificate on the instance (all pages).
    async fn server_trust_certificates(&self) -> Result<Vec<ServerTrustCertificate>, EngineError>;
    /// A server trust certificate, `None` when absent.
    async fn server_trust_certificate(&self, name: &str) -> Result<Option<ServerTrustCertificate>, EngineError>;
    /// Uploads SQL Server's endpoint certificate public key.
    async fn put_server_trust_certificate(&self, name: &str, public_key_hex: &str) -> Result<(), EngineError>;
    /// Deletes a server trust certificate.
    async fn delete_server_trust_certificate(&self, name: &str) -> Result<(), EngineError>;
    /// The MI's database mirroring endpoint certificate.
    async fn endpoint_certificate(&self) -> Result<EndpointCertificate, EngineError>;
    /// Whether a database of this name exists on the MI.
    async fn database_exists(&self, database: &str) -> Result<bool, EngineError>;
    /// Deletes a database on the MI (cancel with drop_target).
    async fn delete_database(&self, database: &str) -> Result<(), EngineError>;
}

/// The ARM resource id of a managed instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId {
    /// Subscription.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Instance name.
    pub name: String,
}

impl InstanceId {
    /// Parses `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Sql/managedInstances/{name}`
    /// (keys case-insensitive, as ARM treats them). The name must match ARM's pattern
    /// `^[a-z0-9]+(?:-[a-z0-9]+)*$` (at most 63 characters).
    pub fn parse(id: &str) -> Result<Self, String> {
        let parts: Vec<&str> = id.trim().trim_matches('/').split('/').collect();
        let key = |i: usize, expected: &str| parts.get(i).is_some_and(|p| p.eq_ignore_ascii_case(expected));
        if parts.len() != 8 || !key(0, "subscriptions") || !key(2, "resourceGroups") || !key(4, "providers") || !key(5, "Microsoft.Sql") || !key(6, "managedInstances") {
            return Err(format!(
                "{id:?} is not a managed instance resource id (/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Sql/managedInstances/<name>)"
            ));
        }
        let name = parts[7];
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name.split('-').all(|piece| !piece.is_empty() && piece.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        if !name_ok {
            return Err(format!("{name:?} is not a managed instance name (lowercase letters, digits and inner hyphens, at most 63)"));
        }
        let group_ok = !parts[3].is_empty() && parts[3].len() <= 90 && parts[3].chars().all(|c| c.is_alphanumeric() || "-_.()".contains(c));
        if parts[1].is_empty() || !parts[1].chars().all(|c| c.is_ascii_alphanumeric() || c == '-') || !group_ok {
            return Err(format!("{id:?} has an invalid subscription or resource group"));
        }
        Ok(Self { subscription: parts[1].to_owned(), resource_group: parts[3].to_owned(), name: name.to_owned() })
    }

    /// The resource path, percent-encoded.
    pub fn path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Sql/managedInstances/{}",
            encode_path_segment(&self.subscription),
            encode_path_segment(&self.resource_group),
            encode_path_segment(&self.name)
        )
    }
}

/// [`ManagedInstanceApi`] over ARM.
#[derive(Debug)]
pub struct ManagedInstanceArm {
    client: client::ArmClient,
    instance: InstanceId,
}

impl ManagedInstanceArm {
    /// The API of one instance.
    pub fn new(client: client::ArmClient, instance: InstanceId) -> Self {
        Self { client, instance }
    }

    fn child(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{}", self.instance.path(), encode_path_segment(name))
    }

    async fn get_as<T: DeserializeOwned>(&self, path: &str, operation: &str) -> Result<Option<T>, EngineError> {
        match self.client.get(path, API_VERSION, operation).await? {
            None => Ok(None),
            Some(body) => serde_json::from_value(body)
                .map(Some)
                .map_err(|e| EngineError::transient("arm_unexpected_body", format!("{operation}: unexpected response: {e}"), "milink retries; if it persists, report it")),
        }
    }

    /// Every item of a child list, all pages; an item that does not parse is an error, never silently dropped
    /// (a dropped link would make the link limit and cancel's "still in use" check wrong).
    async fn list_as<T: DeserializeOwned>(&self, kind: &str, operation: &str) -> Result<Vec<T>, EngineError> {
        let path = format!("{}/{kind}", self.instance.path());
        self.client
            .list(&path, API_VERSION, operation)
            .await?
            .into_iter()
            .map(|item| {
                serde_json::from_value(item)
                    .map_err(|e| EngineError::transient("arm_unexpected_body", format!("{operation}: unexpected item: {e}"), "milink retries; if it persists, report it"))
            })
            .collect()
    }

    async fn run(&self, method: Method, path: &str, body: Option<&Value>, operation: &str) -> Result<(), EngineError> {
        self.client.execute(method, path, API_VERSION, body, operation).await.map(|_| ())
    }
}

#[async_trait]
impl ManagedInstanceApi for ManagedInstanceArm {
    async fn instance(&self) -> Result<ManagedInstance, EngineError> {
        self.get_as(&self.instance.path(), "reading the managed instance").await?.ok_or_else(|| {
            errors::config("mi_not_found", format!("managed instance {} does not exist", self.instance.name), "check options.resource_id of the target connection")
        })
    }

    async fn link(&self, name: &str) -> Result<Option<DistributedAvailabilityGroup>, EngineError> {
        self.get_as(&self.child("distributedAvailabilityGroups", name), "reading the link").await
    }

    async fn links(&self) -> Result<Vec<DistributedAvailabilityGroup>, EngineError> {
        self.list_as("distributedAvailabilityGroups", "listing links").await
    }

    async fn create_link(&self, name: &str, spec: &LinkResourceSpec) -> Result<(), EngineError> {
        let body = models::create_link_body(spec);
        self.run(Method::PUT, &self.child("distributedAvailabilityGroups", name), Some(&body), "creating the link on the managed instance").await
    }

    async fn set_replication_mode(&self, name: &str, synchronous: bool) -> Result<(), EngineError> {
        let body = models::replication_mode_body(synchronous);
        self.run(Method::PATCH, &self.child("distributedAvailabilityGroups", name), Some(&body), "setting the link's replication mode").await
    }

    async fn failover(&self, name: &str, planned: bool) -> Result<(), EngineError> {
        let body = models::failover_body(planned);
        let path = format!("{}/failover", self.child("distributedAvailabilityGroups", name));
        self.run(Method::POST, &path, Some(&body), "failing the link over").await
    }

    async fn set_role(&self, name: &str, primary: bool, forced: bool) -> Result<(), EngineError> {
        let body = models::set_role_body(primary, forced);
        let path = format!("{}/setRole", self.child("distributedAvailabilityGroups", name));
        self.run(Method::POST, &path, Some(&body), "setting the managed instance's role").await
    }

    async fn delete_link(&self, name: &str) -> Result<(), EngineError> {
        self.run(Method::DELETE, &self.child("distributedAvailabilityGroups", name), None, "deleting the link").await
    }

    async fn server_trust_certificates(&self) -> Result<Vec<ServerTrustCertificate>, EngineError> {
        self.list_as("serverTrustCertificates", "listing the server trust certificates").await
    }

    async fn server_trust_certificate(&self, name: &str) -> Result<Option<ServerTrustCertificate>, EngineError> {
        self.get_as(&self.child("serverTrustCertificates", name), "reading the server trust certificate").await
    }

    async fn put_server_trust_certificate(&self, name: &str, public_key_hex: &str) -> Result<(), EngineError> {
        let body = models::server_trust_certificate_body(public_key_hex);
        self.run(Method::PUT, &self.child("serverTrustCertificates", name), Some(&body), "uploading SQL Server's certificate to the managed instance").await
    }

    async fn delete_server_trust_certificate(&self, name: &str) -> Result<(), EngineError> {
        self.run(Method::DELETE, &self.child("serverTrustCertificates", name), None, "deleting the server trust certificate").await
    }

    async fn endpoint_certificate(&self) -> Result<EndpointCertificate, EngineError> {
        self.get_as(&self.child("endpointCertificates", "DATABASE_MIRRORING"), "reading the managed instance's endpoint certificate").await?.ok_or_else(|| {
            EngineError::transient("mi_certificate_missing", "the managed instance has no DATABASE_MIRRORING endpoint certificate yet", "none: milink retries")
        })
    }

    async fn database_exists(&self, database: &str) -> Result<bool, EngineError> {
        Ok(self.client.get(&self.child("databases", database), API_VERSION, "looking for the database on the managed instance").await?.is_some())
    }

    async fn delete_database(&self, database: &str) -> Result<(), EngineError> {
        self.run(Method::DELETE, &self.child("databases", database), None, "deleting the database on the managed instance").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_parse_and_reject() {
        let id = InstanceId::parse("/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/testrg/providers/Microsoft.Sql/managedInstances/testcl").unwrap();
        assert_eq!(id.name, "testcl");
        assert_eq!(id.path(), "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/testrg/providers/Microsoft.Sql/managedInstances/testcl");
        assert!(InstanceId::parse("/subscriptions/s/resourcegroups/rg/providers/microsoft.sql/managedinstances/mi-1").is_ok());
        assert!(InstanceId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/servers/x").is_err());
        assert!(InstanceId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/Bad_Name").is_err());
        assert!(InstanceId::parse("/subscriptions/s/resourceGroups/r%2Fg/providers/Microsoft.Sql/managedInstances/mi").is_err());
    }
}
