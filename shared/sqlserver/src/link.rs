//! Creating and cancelling a link: the ordered steps of mi-link.md §2.1, each *check, then act*.
//!
//! Every step first reads what exists (a catalog query on SQL Server or a GET on ARM) and acts only when
//! something is missing or wrong, so `create_link` after a crash — or twice — resumes and never duplicates.
//! [`create`] returns which steps acted, which the tests use to prove a second run changes nothing. Cancel
//! ([`cancel`]) undoes the link in reverse order; objects the link shares with other links on the same
//! instance (endpoint, certificates) are removed only when no availability group is left and milink made
//! them; the master key and the trusted roots are always left (see docs/sqlserver.md, "Cancel").
//!
//! [`create`] is a sequence of calls, one `ensure_*` function per step, each returning its [`StepOutcome`]
//! (and what later steps need). Create and cancel stay in one file: they are mirror images, read best side
//! by side, and together stay under the ~400 lines STYLE.md asks of a file.
use crate::collector;
use crate::errors;
use crate::inventory::MirroringEndpoint;
use crate::plan::Link;
use crate::roots::{dns_wildcard, trusted_roots};
use crate::tds::{rows_as, SqlSession};
use crate::tsql::{link as sql, normalize_hex_blob, probe};
use crate::versions::{failback, Build, UpdatePolicy};
use crate::arm::models::{LinkResourceSpec, ServerTrustCertificate};
use chrono::{DateTime, Months, Utc};
use milink_core::config::Secret;
use milink_core::error::EngineError;
use serde::Deserialize;

/// One step and whether it changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// Step name.
    pub step: &'static str,
    /// It acted (false: what it makes already existed).
    pub acted: bool,
}

#[derive(Deserialize)]
struct PublicKeyRow {
    public_key: Option<String>,
    thumbprint: Option<String>,
}

/// A certificate's public key and thumbprint, both upper-case hex without `0x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateKey {
    /// `CERTENCODED` of the certificate.
    pub public_key: String,
    /// `sys.certificates.thumbprint` (SHA-1), when SQL Server reports it.
    pub thumbprint: Option<String>,
}

#[derive(Deserialize)]
struct MemberRow {
    name: String,
    database_name: Option<String>,
}

/// A certificate's public key and thumbprint, `None` when it does not exist.
pub async fn certificate_key(session: &mut dyn SqlSession, name: &str) -> Result<Option<CertificateKey>, EngineError> {
    let rows: Vec<PublicKeyRow> = rows_as(session.query(&sql::certificate_public_key(name)).await?, "certificate")?;
    Ok(rows.into_iter().next().and_then(|r| {
        let public_key = r.public_key.as_deref().and_then(normalize_hex_blob)?;
        Some(CertificateKey { public_key, thumbprint: r.thumbprint.as_deref().and_then(normalize_hex_blob) })
    }))
}

/// A certificate's public key as upper-case hex, `None` when it does not exist.
pub async fn public_key(session: &mut dyn SqlSession, name: &str) -> Result<Option<String>, EngineError> {
    Ok(certificate_key(session, name).await?.map(|k| k.public_key))
}

/// Whether a server trust certificate on the MI is this key: the same public blob, or (when the listing
/// carries no blob) the same thumbprint — the comparison Microsoft's New-MiLink makes before uploading.
fn same_key(uploaded: &ServerTrustCertificate, key: &CertificateKey) -> bool {
    let properties = &uploaded.properties;
    match properties.public_blob.as_deref().and_then(normalize_hex_blob) {
        Some(blob) => blob == key.public_key,
        None => key.thumbprint.is_some() && properties.thumbprint.as_deref().and_then(normalize_hex_blob) == key.thumbprint,
    }
}

fn expiry(now: DateTime<Utc>) -> String {
    now.checked_add_months(Months::new(60)).unwrap_or(now).format("%Y%m%d").to_string()
}

/// The MI's short name (first DNS label of its FQDN).
pub fn instance_short_name(fqdn: &str) -> &str {
    fqdn.split('.').next().unwrap_or(fqdn)
}

fn is_fqdn(text: &str) -> bool {
    !text.is_empty() && text.len() <= 253 && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// Creates the link; returns what each step did.
///
/// Reads what the steps share once, then runs one function per step in the order of mi-link.md §2.1. A
/// failing step stops the ones after it; since every step checks before it acts, a rerun passes over what
/// already exists and resumes at the step that failed.
pub async fn create(link: &Link, session: &mut dyn SqlSession, now: DateTime<Utc>, master_key_password: &(dyn Fn() -> Result<Secret, EngineError> + Sync)) -> Result<Vec<StepOutcome>, EngineError> {
    let facts = read_facts(link, session).await?;
    let mut done = vec![ensure_master_key(session, facts.has_master_key, master_key_password).await?];
    let endpoint = collector::mirroring_endpoint(session).await?;
    let (certificate, outcome) = ensure_endpoint_certificate(link, session, endpoint.as_ref(), now).await?;
    done.push(outcome);
    done.push(ensure_server_trust_certificate(link, &facts.server_name, &certificate).await?);
    done.push(ensure_instance_certificate(link, session, &facts.fqdn).await?);
    done.push(ensure_trusted_roots(session, &facts.fqdn).await?);
    let (listen_port, outcome) = ensure_mirroring_endpoint(link, session, endpoint.as_ref(), &certificate.name).await?;
    done.push(outcome);
    let endpoint_url = partner_endpoint_url(link, listen_port);
    let members = availability_group_members(link, session).await?;
    done.push(ensure_local_ag(link, session, &facts, &members, &endpoint_url).await?);
    done.push(ensure_distributed_ag(link, session, &facts.fqdn, &members, &endpoint_url).await?);
    done.push(ensure_managed_instance_link(link, &facts, endpoint_url).await?);
    Ok(done)
}

/// What the steps of [`create`] share about both servers, read once before the first step acts.
struct Facts {
    /// SQL Server's `@@SERVERNAME`.
    server_name: String,
    /// SQL Server's version (0.0.0.0 when it does not parse).
    build: Build,
    /// Whether `master` already has a database master key.
    has_master_key: bool,
    /// The MI's update policy, from its database format.
    update_policy: Option<UpdatePolicy>,
    /// The MI's fully qualified domain name, checked by [`is_fqdn`] before it reaches T-SQL.
    fqdn: String,
}

/// Reads SQL Server's instance facts and the MI; fails before any step acts if the MI has no usable FQDN yet.
async fn read_facts(link: &Link, session: &mut dyn SqlSession) -> Result<Facts, EngineError> {
    let (instance, has_master_key) = collector::instance_facts(session).await?;
    let build = Build::parse(&instance.product_version).unwrap_or(Build(0, 0, 0, 0));
    let mi = link.target.api.instance().await?;
    let fqdn = mi.properties.fully_qualified_domain_name.clone().filter(|f| is_fqdn(f)).ok_or_else(|| {
        EngineError::transient("mi_fqdn_unknown", "the managed instance does not report its fully qualified domain name yet", "none: milink retries")
    })?;
    let update_policy = mi.properties.database_format.as_deref().and_then(UpdatePolicy::from_database_format);
    Ok(Facts { server_name: instance.server_name, build, has_master_key, update_policy, fqdn })
}

/// Step 2: database master key.
async fn ensure_master_key(session: &mut dyn SqlSession, has_master_key: bool, master_key_password: &(dyn Fn() -> Result<Secret, EngineError> + Sync)) -> Result<StepOutcome, EngineError> {
    if !has_master_key {
        session.execute(&sql::create_master_key(master_key_password()?)).await?;
    }
    Ok(StepOutcome { step: "master_key", acted: !has_master_key })
}

/// The certificate SQL Server's mirroring endpoint authenticates with.
struct EndpointCertificate {
    /// Its name in `master`.
    name: String,
    /// Its public key, which the MI must trust.
    key: CertificateKey,
}

/// Step 3: the endpoint's certificate (an existing certificate-authenticated endpoint keeps its own).
async fn ensure_endpoint_certificate(link: &Link, session: &mut dyn SqlSession, endpoint: Option<&MirroringEndpoint>, now: DateTime<Utc>) -> Result<(EndpointCertificate, StepOutcome), EngineError> {
    let certificate = endpoint.and_then(|e| e.certificate_name.clone()).unwrap_or_else(|| link.source.options.endpoint_certificate.clone());
    let existing_key = certificate_key(session, &certificate).await?;
    let created_certificate = existing_key.is_none();
    let key = match existing_key {
        Some(key) => key,
        None => {
            session.execute(&sql::create_endpoint_certificate(&certificate, &expiry(now))).await?;
            certificate_key(session, &certificate)
                .await?
                .ok_or_else(|| EngineError::transient("certificate_missing", format!("certificate {certificate} has no public key yet"), "none: milink retries"))?
        }
    };
    Ok((EndpointCertificate { name: certificate, key }, StepOutcome { step: "endpoint_certificate", acted: created_certificate }))
}

/// Step 5: SQL Server's public key on the MI. Matched by key, not by name: the same certificate may have
/// been uploaded under another name (by SSMS, the scripts, or another link), and the MI holds one copy only.
async fn ensure_server_trust_certificate(link: &Link, server_name: &str, certificate: &EndpointCertificate) -> Result<StepOutcome, EngineError> {
    let trust_name = link.trust_certificate_name(server_name, &certificate.name);
    let uploaded = link.target.api.server_trust_certificates().await?;
    let already = uploaded.iter().any(|c| same_key(c, &certificate.key));
    if !already {
        let stale = uploaded.iter().any(|c| c.name.as_deref().or(c.properties.certificate_name.as_deref()) == Some(trust_name.as_str()));
        if stale {
            // milink's name holds an older key (the endpoint certificate was rotated): replace it.
            link.target.api.delete_server_trust_certificate(&trust_name).await?;
        }
        link.target.api.put_server_trust_certificate(&trust_name, &certificate.key.public_key).await?;
    }
    Ok(StepOutcome { step: "server_trust_certificate", acted: !already })
}

/// Steps 6–7: the MI's certificate on SQL Server, named exactly as its FQDN (re-imported after rotation).
async fn ensure_instance_certificate(link: &Link, session: &mut dyn SqlSession, fqdn: &str) -> Result<StepOutcome, EngineError> {
    let mi_blob = link.target.api.endpoint_certificate().await?.properties.public_blob.as_deref().and_then(normalize_hex_blob).ok_or_else(|| {
        EngineError::transient("mi_certificate_invalid", "the managed instance's endpoint certificate has no usable public key", "none: milink retries")
    })?;
    let on_sql = public_key(session, fqdn).await?;
    let import = on_sql.as_deref() != Some(mi_blob.as_str());
    if import {
        if on_sql.is_some() {
            session.execute(&sql::drop_certificate(fqdn)).await?;
        }
        session.execute(&sql::import_certificate(fqdn, &mi_blob).expect("normalized hex")).await?;
    }
    Ok(StepOutcome { step: "instance_certificate", acted: import })
}

/// Step 8: trusted roots for the MI's DNS zone.
async fn ensure_trusted_roots(session: &mut dyn SqlSession, fqdn: &str) -> Result<StepOutcome, EngineError> {
    let mut imported_root = false;
    for root in trusted_roots() {
        if public_key(session, root.name).await?.is_none() {
            session.execute(&sql::import_certificate(root.name, &root.hex).expect("shipped hex")).await?;
            imported_root = true;
        }
        session.execute(&sql::add_trusted_issuer(root.name, &dns_wildcard(fqdn))).await?;
    }
    Ok(StepOutcome { step: "trusted_roots", acted: imported_root })
}

/// Step 9: the mirroring endpoint; returns the port it listens on.
/// It listens where it already listens; the URLs the MI uses follow replication_url (NAT may map ports).
async fn ensure_mirroring_endpoint(link: &Link, session: &mut dyn SqlSession, endpoint: Option<&MirroringEndpoint>, certificate: &str) -> Result<(u16, StepOutcome), EngineError> {
    let listen_port = endpoint.map(|e| e.port).or(link.source.replication_port).unwrap_or(link.source.options.endpoint_port);
    let endpoint_acted = match endpoint {
        None => {
            session.execute(&sql::create_endpoint(&link.source.options.endpoint_name, listen_port, certificate)).await?;
            true
        }
        Some(existing) if !existing.is_link_ready() => {
            session.execute(&sql::alter_endpoint(&existing.name, listen_port, certificate)).await?;
            true
        }
        Some(_) => false,
    };
    Ok((listen_port, StepOutcome { step: "mirroring_endpoint", acted: endpoint_acted }))
}

/// The URL the MI reaches SQL Server's endpoint at: replication_url's port when set, else the listening port.
fn partner_endpoint_url(link: &Link, listen_port: u16) -> String {
    format!("TCP://{}:{}", link.source.replication_host, link.source.replication_port.unwrap_or(listen_port))
}

/// Steps 10–11: the local AG and the distributed AG. Both read this one listing of which of the link's two
/// availability groups exist, and with which databases.
async fn availability_group_members(link: &Link, session: &mut dyn SqlSession) -> Result<Vec<MemberRow>, EngineError> {
    rows_as(session.query(&probe::availability_group_members(&[&link.names.local_ag, &link.names.distributed_ag])).await?, "availability groups")
}

/// Step 10: the local AG.
async fn ensure_local_ag(link: &Link, session: &mut dyn SqlSession, facts: &Facts, members: &[MemberRow], endpoint_url: &str) -> Result<StepOutcome, EngineError> {
    let local: Vec<&MemberRow> = members.iter().filter(|m| m.name == link.names.local_ag).collect();
    if local.is_empty() {
        let spec = sql::LocalAgSpec { name: &link.names.local_ag, database: &link.database, server_name: &facts.server_name, endpoint_url, major_version: facts.build.major() };
        session.execute(&sql::create_local_ag(&spec)).await?;
    } else if !local.iter().any(|m| m.database_name.as_deref() == Some(link.database.as_str())) {
        return Err(errors::config(
            "availability_group_conflict",
            format!("availability group {} exists and does not hold database {}", link.names.local_ag, link.database),
            "drop that availability group or set options.availability_group to another name",
        ));
    }
    Ok(StepOutcome { step: "availability_group", acted: local.is_empty() })
}

/// Step 11: the distributed AG.
async fn ensure_distributed_ag(link: &Link, session: &mut dyn SqlSession, fqdn: &str, members: &[MemberRow], endpoint_url: &str) -> Result<StepOutcome, EngineError> {
    let has_dag = members.iter().any(|m| m.name == link.names.distributed_ag);
    if !has_dag {
        let spec = sql::DistributedAgSpec {
            name: &link.names.distributed_ag,
            local_ag: &link.names.local_ag,
            local_listener_url: endpoint_url,
            instance_ag: &link.names.instance_ag,
            instance_fqdn: fqdn,
            instance_name: instance_short_name(fqdn),
        };
        session.execute(&sql::create_distributed_ag(&spec)).await?;
    }
    Ok(StepOutcome { step: "distributed_availability_group", acted: !has_dag })
}

/// Step 12: the MI joins.
async fn ensure_managed_instance_link(link: &Link, facts: &Facts, endpoint_url: String) -> Result<StepOutcome, EngineError> {
    let spec = LinkResourceSpec {
        partner_availability_group: link.names.local_ag.clone(),
        partner_endpoint: endpoint_url,
        instance_availability_group: link.names.instance_ag.clone(),
        database: link.database.clone(),
        failover_manual: failback(facts.build, facts.update_policy).possible,
    };
    let joined = match link.target.api.link(&link.names.distributed_ag).await? {
        None => {
            link.target.api.create_link(&link.names.distributed_ag, &spec).await?;
            true
        }
        Some(existing) if existing.properties.partner_availability_group_name.as_deref().is_some_and(|p| p != spec.partner_availability_group) => {
            return Err(errors::config(
                "link_name_conflict",
                format!("a link named {} already exists on the managed instance for another availability group", link.names.distributed_ag),
                "set options.link_name to another name, or delete that link",
            ));
        }
        Some(_) => false,
    };
    Ok(StepOutcome { step: "managed_instance_link", acted: joined })
}


/// What a cancel removed and what it deliberately left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelReport {
    /// Objects removed, in order.
    pub removed: Vec<String>,
    /// Objects left in place, with why.
    pub left: Vec<String>,
}

/// Removes what [`create`] made, in reverse order. Safe to repeat: every removal checks existence first.
pub async fn cancel(link: &Link, session: &mut dyn SqlSession, drop_target: bool) -> Result<CancelReport, EngineError> {
    let mut report = CancelReport::default();
    let api = &link.target.api;
    let (instance, _) = collector::instance_facts(session).await?;
    let endpoint = collector::mirroring_endpoint(session).await?;
    let certificate = endpoint.as_ref().and_then(|e| e.certificate_name.clone()).unwrap_or_else(|| link.source.options.endpoint_certificate.clone());

    api.delete_link(&link.names.distributed_ag).await?;
    report.removed.push(format!("link {} on the managed instance", link.names.distributed_ag));
    for group in [&link.names.distributed_ag, &link.names.local_ag] {
        session.execute(&sql::drop_availability_group(group)).await?;
        report.removed.push(format!("availability group {group} on SQL Server"));
    }
    if api.database_exists(&link.database).await? {
        if drop_target {
            api.delete_database(&link.database).await?;
            report.removed.push(format!("database {} on the managed instance", link.database));
        } else {
            report.left.push(format!(
                "database {} on the managed instance: an independent read/write copy as of the cancel; delete it before linking this database again, or seeding fails (RemoteDatabaseExists)",
                link.database
            ));
        }
    }

    let remaining = collector::availability_groups(session).await?;
    if !remaining.is_empty() {
        report.left.push(format!(
            "the mirroring endpoint and the certificates: {} other availability group(s) on SQL Server may use them",
            remaining.len()
        ));
    } else {
        let mut endpoint_dropped = endpoint.is_none();
        match &endpoint {
            Some(e) if e.name == link.source.options.endpoint_name => {
                session.execute(&sql::drop_endpoint(&e.name)).await?;
                report.removed.push(format!("mirroring endpoint {}", e.name));
                endpoint_dropped = true;
            }
            Some(e) => report.left.push(format!("mirroring endpoint {}: it existed before milink (milink only altered it)", e.name)),
            None => {}
        }
        if let Some(fqdn) = api.instance().await?.properties.fully_qualified_domain_name.filter(|f| is_fqdn(f)) {
            session.execute(&sql::drop_certificate(&fqdn)).await?;
            report.removed.push(format!("certificate {fqdn} on SQL Server"));
        }
        let partner_still_linked = api.links().await?.iter().any(|l| {
            l.properties.partner_endpoint.as_deref().is_some_and(|p| p.to_ascii_lowercase().contains(&link.source.replication_host.to_ascii_lowercase()))
        });
        let trust_name = link.trust_certificate_name(&instance.server_name, &certificate);
        if partner_still_linked {
            report.left.push(format!("certificate {trust_name} on the managed instance: other links from this SQL Server use it"));
        } else {
            api.delete_server_trust_certificate(&trust_name).await?;
            report.removed.push(format!("certificate {trust_name} on the managed instance"));
        }
        if endpoint_dropped && certificate == link.source.options.endpoint_certificate {
            session.execute(&sql::drop_certificate(&certificate)).await?;
            report.removed.push(format!("certificate {certificate} on SQL Server"));
        }
    }
    report.left.push("the database master key and the MicrosoftPKI / DigiCertPKI trusted roots in master: other features may rely on them".into());
    Ok(report)
}
