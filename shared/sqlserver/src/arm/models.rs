//! ARM request bodies (built by pure functions) and the response fields milink reads.
//!
//! Bodies are `serde_json::Value`s built here and nowhere else, so tests can validate every one against the
//! OpenAPI definitions in `shared/specs` (api-version 2025-01-01, the newest stable version; it has every
//! field milink sends — only `linkMode`, which milink does not use, is preview-only). Responses are read into
//! small structs that name only the fields used, all optional, so an unknown or missing field never breaks
//! polling; unknown enum values (`replicaState` is a free string) stay strings.
use serde::Deserialize;
use serde_json::{json, Value};

/// The api-version for every call: newest stable with all fields milink sends.
pub const API_VERSION: &str = "2025-01-01";

/// What milink asks the managed instance to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkResourceSpec {
    /// The SQL Server AG (`partnerAvailabilityGroupName`).
    pub partner_availability_group: String,
    /// `TCP://host:port` of SQL Server's endpoint (`partnerEndpoint`).
    pub partner_endpoint: String,
    /// The MI's member name in the distributed AG (`instanceAvailabilityGroupName`).
    pub instance_availability_group: String,
    /// The database.
    pub database: String,
    /// `Manual` when the link can fail back (two-way), `None` for one-way.
    pub failover_manual: bool,
}

/// Body of `PUT …/distributedAvailabilityGroups/{name}`: the MI joins as secondary, seeded automatically.
pub fn create_link_body(spec: &LinkResourceSpec) -> Value {
    json!({
        "properties": {
            "partnerAvailabilityGroupName": spec.partner_availability_group,
            "partnerEndpoint": spec.partner_endpoint,
            "instanceAvailabilityGroupName": spec.instance_availability_group,
            "instanceLinkRole": "Secondary",
            "failoverMode": if spec.failover_manual { "Manual" } else { "None" },
            "seedingMode": "Automatic",
            "databases": [ { "databaseName": spec.database } ]
        }
    })
}

/// Body of `PATCH …/distributedAvailabilityGroups/{name}`: replication mode for cutover (`Sync`) or abort.
pub fn replication_mode_body(synchronous: bool) -> Value {
    json!({ "properties": { "replicationMode": if synchronous { "Sync" } else { "Async" } } })
}

/// Body of `POST …/failover`.
pub fn failover_body(planned: bool) -> Value {
    json!({ "failoverType": if planned { "Planned" } else { "ForcedAllowDataLoss" } })
}

/// Body of `POST …/setRole`.
pub fn set_role_body(primary: bool, forced: bool) -> Value {
    json!({
        "instanceRole": if primary { "Primary" } else { "Secondary" },
        "roleChangeType": if forced { "Forced" } else { "Planned" }
    })
}

/// Body of `PUT …/serverTrustCertificates/{name}`: SQL Server's endpoint certificate as `0x` + hex.
///
/// Why `0x` although the spec's example shows bare hex: that example is a truncated illustration, and every
/// Microsoft client that runs in production sends `0x…` — `New-AzSqlInstanceServerTrustCertificate` declares
/// `[ValidatePattern("^0x[0-9a-fA-F]+$")]` and passes the value unchanged, and the MI link scripts and the
/// documented REST script upload `CERTENCODED(…)` as `0x…`. The service answers with bare upper-case hex
/// (Az.Sql prepends `0x` when it reads one back), so blobs are compared after [`crate::tsql::normalize_hex_blob`].
pub fn server_trust_certificate_body(public_key_hex: &str) -> Value {
    let hex = public_key_hex.trim();
    let hex = hex.strip_prefix("0x").or_else(|| hex.strip_prefix("0X")).unwrap_or(hex);
    json!({ "properties": { "publicBlob": format!("0x{hex}") } })
}

/// A distributed availability group as ARM returns it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DistributedAvailabilityGroup {
    /// Resource id.
    pub id: Option<String>,
    /// Resource name.
    pub name: Option<String>,
    /// Properties.
    pub properties: DagProperties,
}

/// `DistributedAvailabilityGroupProperties`, the fields milink reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DagProperties {
    /// `Async` / `Sync`.
    pub replication_mode: Option<String>,
    /// SQL Server's role.
    pub partner_link_role: Option<String>,
    /// The MI's role.
    pub instance_link_role: Option<String>,
    /// SQL Server's AG.
    pub partner_availability_group_name: Option<String>,
    /// SQL Server's endpoint.
    pub partner_endpoint: Option<String>,
    /// The MI's member name.
    pub instance_availability_group_name: Option<String>,
    /// `None` / `Manual`.
    pub failover_mode: Option<String>,
    /// Databases.
    pub databases: Vec<DagDatabase>,
}

/// `DistributedAvailabilityGroupDatabase`, the fields milink reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DagDatabase {
    /// Database name.
    pub database_name: Option<String>,
    /// Free text: `Seeding`, `Catchup`, `Connected`, `LinkInitError`, ….
    pub replica_state: Option<String>,
    /// E.g. `80%`.
    pub seeding_progress: Option<String>,
    /// `NOT_HEALTHY` / `PARTIALLY_HEALTHY` / `HEALTHY`.
    pub synchronization_health: Option<String>,
    /// `DISCONNECTED` / `CONNECTED`.
    pub connected_state: Option<String>,
    /// Decimal LSN string.
    pub last_hardened_lsn: Option<String>,
    /// Decimal LSN string.
    pub last_received_lsn: Option<String>,
    /// Decimal LSN string.
    pub last_commit_lsn: Option<String>,
    /// The most recent link error, in words.
    pub most_recent_link_error: Option<String>,
    /// Send lag when the MI is primary.
    pub instance_send_replication_lag_seconds: Option<i64>,
    /// Redo lag when the MI is primary.
    pub instance_redo_replication_lag_seconds: Option<i64>,
}

/// A managed instance, the fields milink reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ManagedInstance {
    /// Resource name.
    pub name: Option<String>,
    /// SKU.
    pub sku: Option<Sku>,
    /// Properties.
    pub properties: ManagedInstanceProperties,
}

/// ARM SKU.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Sku {
    /// E.g. `GP_Gen5`.
    pub name: Option<String>,
    /// `GeneralPurpose` / `BusinessCritical`.
    pub tier: Option<String>,
}

/// `ManagedInstanceProperties`, the fields milink reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ManagedInstanceProperties {
    /// FQDN; the MI's certificate on SQL Server must be named exactly this.
    pub fully_qualified_domain_name: Option<String>,
    /// `Ready`, `Stopped`, ….
    pub state: Option<String>,
    /// Update policy: `AlwaysUpToDate`, `SQLServer2022`, `SQLServer2025`.
    pub database_format: Option<String>,
    /// Collation.
    pub collation: Option<String>,
    /// Reserved storage, GB.
    pub storage_size_in_gb: Option<f64>,
    /// vCores.
    pub v_cores: Option<u32>,
    /// Next-gen General Purpose.
    pub is_general_purpose_v2: Option<bool>,
}

/// `endpointCertificates/DATABASE_MIRRORING`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EndpointCertificate {
    /// Properties.
    pub properties: CertificateProperties,
}

/// `serverTrustCertificates/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ServerTrustCertificate {
    /// Resource name (the certificate's name on the MI).
    pub name: Option<String>,
    /// Properties.
    pub properties: CertificateProperties,
}

/// Certificate properties of both resources.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CertificateProperties {
    /// Hex, with or without `0x`.
    pub public_blob: Option<String>,
    /// Thumbprint (SHA-1 of the certificate, hex; the same value as `sys.certificates.thumbprint`).
    pub thumbprint: Option<String>,
    /// Name.
    pub certificate_name: Option<String>,
}

/// Parses `seedingProgress` (`"80%"`) into a percentage.
pub fn parse_seeding_progress(text: &str) -> Option<f64> {
    let value: f64 = text.trim().trim_end_matches('%').trim().parse().ok()?;
    value.is_finite().then_some(value.clamp(0.0, 100.0))
}
