//! Assessment reports: instance findings, per-database readiness, and a size recommendation.
//!
//! Engines produce [`Assessment`] (what they found); the core rolls findings up into readiness the way
//! Microsoft's tools do: any blocker makes a database Not ready, any warning makes it Ready with warnings.
//! An instance-level blocker (say, `wal_level` is not `logical`) blocks every database on that instance,
//! because no database there can be linked until it is fixed.
use crate::names::ConnectionName;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// Worth knowing; changes nothing (e.g. sequences are synced at cutover).
    Info,
    /// The migration works, but something needs attention.
    Warning,
    /// The database cannot be migrated until this is fixed.
    Blocker,
}

/// Per-database readiness, rolled up from findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Readiness {
    /// No blocker, no warning.
    Ready,
    /// No blocker, at least one warning.
    ReadyWithWarnings,
    /// At least one blocker.
    NotReady,
}

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// A stable rule id (`table_without_replica_identity`, `wal_level_not_logical`, ...).
    pub rule: String,
    /// How serious it is.
    pub severity: Severity,
    /// What was found, in words.
    pub message: String,
    /// The objects concerned (`public.events`), possibly empty.
    #[serde(default)]
    pub objects: Vec<String>,
    /// What to do about it.
    pub remediation: String,
}

impl Finding {
    /// Builds a finding.
    pub fn new(rule: &str, severity: Severity, message: impl Into<String>, remediation: impl Into<String>) -> Self {
        Self { rule: rule.into(), severity, message: message.into(), objects: Vec::new(), remediation: remediation.into() }
    }

    /// The same finding naming the objects concerned.
    pub fn with_objects(mut self, objects: Vec<String>) -> Self {
        self.objects = objects;
        self
    }
}

/// Rolls findings up into readiness.
pub fn readiness<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Readiness {
    let worst = findings.into_iter().map(|f| f.severity).max();
    match worst {
        Some(Severity::Blocker) => Readiness::NotReady,
        Some(Severity::Warning) => Readiness::ReadyWithWarnings,
        _ => Readiness::Ready,
    }
}

/// What an engine found about one database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseAssessment {
    /// The database name.
    pub name: String,
    /// Rolled-up readiness, instance blockers included.
    pub readiness: Readiness,
    /// Findings for this database only.
    pub findings: Vec<Finding>,
    /// Size in bytes, when known.
    pub size_bytes: Option<u64>,
}

/// A size recommendation for the target, with the reasons behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// A name for the size (`General Purpose 4 vCores`, `pg: 2 vCores / 8 GiB`).
    pub sku: String,
    /// Virtual cores.
    pub vcores: u32,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// Storage in GiB.
    pub storage_gib: u64,
    /// Estimated monthly cost in USD, when the engine has a price list.
    pub monthly_cost_usd: Option<f64>,
    /// Why this size: each input and how it weighed.
    pub reasons: Vec<String>,
    /// `High`, `Medium` or `Low`, from how much activity was observed.
    pub confidence: String,
    /// Where the prices behind `monthly_cost_usd` come from, and their date; `None` when there is no cost.
    #[serde(default)]
    pub price_list: Option<PriceListSource>,
}

/// The price list a monthly cost was computed from: the reader must see how old and how sure it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceListSource {
    /// `builtIn` (the table shipped inside milink) or `file` (a deployment's own `price_file`).
    pub origin: PriceListOrigin,
    /// Where the figures come from, in the list's own words.
    pub source: String,
    /// The date the figures were read (`2026-09-13`).
    pub as_of: String,
    /// Azure region the prices are for.
    pub region: String,
    /// Currency of the prices.
    pub currency: String,
    /// The list says its figures are estimates, not prices read from the provider for this purchase.
    pub estimate: bool,
}

/// Where a price list was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PriceListOrigin {
    /// The table built into milink (no price service is asked).
    BuiltIn,
    /// A file named by the connection's `price_file` option.
    File,
}

/// Who is connected to the source now: the sessions the DBA must stop before cutover.
///
/// Engines read the server's session list once (milink's own sessions and the server's background
/// processes left out) and group it by application, client host, login and database. At most
/// [`ConnectionSummary::MAX_GROUPS`] groups are kept, busiest first, so a server with thousands of distinct
/// clients still gives a report a store can hold; `total_sessions` always counts every session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSummary {
    /// Client sessions in all.
    pub total_sessions: u64,
    /// Sessions per database, busiest first (sessions with no database, e.g. a login still on `master`,
    /// count under the database the server reports).
    pub databases: Vec<DatabaseSessions>,
    /// One row per application, host, login and database, busiest first.
    pub groups: Vec<SessionGroup>,
    /// Groups left out beyond [`ConnectionSummary::MAX_GROUPS`].
    pub groups_left_out: u64,
}

/// Client sessions on one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSessions {
    /// Database name.
    pub database: String,
    /// Its sessions.
    pub sessions: u64,
}

/// Sessions that share an application, a client host, a login and a database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionGroup {
    /// The application name the client announced (empty when it announced none).
    pub application: String,
    /// Client address or host name; `local` for a Unix socket or shared-memory connection.
    pub host: String,
    /// Login (SQL Server) or role (PostgreSQL).
    pub login: String,
    /// The database the sessions are in.
    pub database: String,
    /// How many sessions.
    pub sessions: u64,
}

impl ConnectionSummary {
    /// Groups kept in a report.
    pub const MAX_GROUPS: usize = 200;

    /// Builds the summary from groups as an engine read them (in any order, possibly with repeats of a
    /// key, which are added up): totals per database, busiest first, ties by name.
    pub fn from_groups(groups: impl IntoIterator<Item = SessionGroup>) -> Self {
        let mut merged: std::collections::BTreeMap<(String, String, String, String), u64> = Default::default();
        for g in groups {
            *merged.entry((g.application, g.host, g.login, g.database)).or_default() += g.sessions;
        }
        let mut per_database: std::collections::BTreeMap<String, u64> = Default::default();
        for ((_, _, _, database), sessions) in &merged {
            *per_database.entry(database.clone()).or_default() += sessions;
        }
        let mut groups: Vec<SessionGroup> = merged
            .into_iter()
            .filter(|(_, sessions)| *sessions > 0)
            .map(|((application, host, login, database), sessions)| SessionGroup { application, host, login, database, sessions })
            .collect();
        groups.sort_by(|a, b| b.sessions.cmp(&a.sessions).then_with(|| a.cmp(b)));
        let mut databases: Vec<DatabaseSessions> = per_database
            .into_iter()
            .filter(|(_, sessions)| *sessions > 0)
            .map(|(database, sessions)| DatabaseSessions { database, sessions })
            .collect();
        databases.sort_by(|a, b| b.sessions.cmp(&a.sessions).then_with(|| a.database.cmp(&b.database)));
        let total_sessions = databases.iter().map(|d| d.sessions).sum();
        let groups_left_out = groups.len().saturating_sub(Self::MAX_GROUPS) as u64;
        groups.truncate(Self::MAX_GROUPS);
        Self { total_sessions, databases, groups, groups_left_out }
    }

    /// Sessions on `database`.
    pub fn sessions_on(&self, database: &str) -> u64 {
        self.databases.iter().find(|d| d.database == database).map_or(0, |d| d.sessions)
    }
}

/// What an engine's assessment returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    /// Server version as the server reports it.
    pub server_version: String,
    /// Instance-level findings.
    pub instance_findings: Vec<Finding>,
    /// Per-database findings (readiness is recomputed by [`AssessmentReport::completed`]).
    pub databases: Vec<DatabaseAssessment>,
    /// Size recommendation.
    pub recommendation: Option<Recommendation>,
    /// Who is connected now; `None` when the engine could not read the session list.
    #[serde(default)]
    pub connection_summary: Option<ConnectionSummary>,
}

/// Status of an assessment run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssessmentStatus {
    /// Queued or in progress.
    Running,
    /// Finished; the report is complete.
    Completed,
    /// Could not run; see `error`.
    Failed,
}

/// Instance part of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    /// Server version.
    pub version: Option<String>,
    /// Instance-level findings.
    pub findings: Vec<Finding>,
}

/// A stored assessment, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssessmentReport {
    /// Assessment id.
    pub id: String,
    /// The connection assessed.
    pub connection: ConnectionName,
    /// Running, Completed or Failed.
    pub status: AssessmentStatus,
    /// When it was requested.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub completed_at: Option<DateTime<Utc>>,
    /// Instance findings.
    pub instance: InstanceReport,
    /// Per-database readiness and findings.
    pub databases: Vec<DatabaseAssessment>,
    /// Size recommendation.
    pub recommendation: Option<Recommendation>,
    /// Who was connected to the source when it was assessed (the sessions to stop at cutover).
    #[serde(default)]
    pub connection_summary: Option<ConnectionSummary>,
    /// Why it failed, when it did.
    pub error: Option<crate::error::EngineError>,
}

impl AssessmentReport {
    /// A report for a freshly requested assessment.
    pub fn running(id: String, connection: ConnectionName, now: DateTime<Utc>) -> Self {
        Self {
            id,
            connection,
            status: AssessmentStatus::Running,
            started_at: now,
            completed_at: None,
            instance: InstanceReport::default(),
            databases: Vec::new(),
            recommendation: None,
            connection_summary: None,
            error: None,
        }
    }

    /// Fills the report from an engine's findings, rolling readiness up (instance blockers included).
    pub fn completed(mut self, assessment: Assessment, now: DateTime<Utc>) -> Self {
        let instance_blockers: Vec<&Finding> =
            assessment.instance_findings.iter().filter(|f| f.severity == Severity::Blocker).collect();
        self.databases = assessment
            .databases
            .into_iter()
            .map(|mut db| {
                db.readiness = readiness(db.findings.iter().chain(instance_blockers.iter().copied()));
                db
            })
            .collect();
        self.instance = InstanceReport { version: Some(assessment.server_version), findings: assessment.instance_findings };
        self.recommendation = assessment.recommendation;
        self.connection_summary = assessment.connection_summary;
        self.status = AssessmentStatus::Completed;
        self.completed_at = Some(now);
        self
    }

    /// Marks the report failed.
    pub fn failed(mut self, error: crate::error::EngineError, now: DateTime<Utc>) -> Self {
        self.status = AssessmentStatus::Failed;
        self.error = Some(error);
        self.completed_at = Some(now);
        self
    }

    /// The blockers that stop `database` from being linked: its own and the instance's.
    /// `None` when the database is not in the report.
    pub fn blockers_for(&self, database: &str) -> Option<Vec<Finding>> {
        let db = self.databases.iter().find(|d| d.name == database)?;
        Some(
            db.findings
                .iter()
                .chain(self.instance.findings.iter())
                .filter(|f| f.severity == Severity::Blocker)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(severity: Severity) -> Finding {
        Finding::new("r", severity, "m", "fix")
    }

    #[test]
    fn readiness_is_the_worst_finding() {
        assert_eq!(readiness(&[]), Readiness::Ready);
        assert_eq!(readiness(&[finding(Severity::Info)]), Readiness::Ready);
        assert_eq!(readiness(&[finding(Severity::Info), finding(Severity::Warning)]), Readiness::ReadyWithWarnings);
        assert_eq!(readiness(&[finding(Severity::Blocker), finding(Severity::Warning)]), Readiness::NotReady);
    }

    #[test]
    fn an_instance_blocker_blocks_every_database() {
        let report = AssessmentReport::running("a".into(), ConnectionName::parse("src").unwrap(), Utc::now());
        let assessment = Assessment {
            server_version: "15".into(),
            instance_findings: vec![finding(Severity::Blocker)],
            databases: vec![DatabaseAssessment {
                name: "db".into(),
                readiness: Readiness::Ready,
                findings: vec![],
                size_bytes: None,
            }],
            recommendation: None,
            connection_summary: None,
        };
        let report = report.completed(assessment, Utc::now());
        assert_eq!(report.databases[0].readiness, Readiness::NotReady);
        assert_eq!(report.blockers_for("db").unwrap().len(), 1);
        assert!(report.blockers_for("other").is_none());
    }

    fn group(application: &str, database: &str, sessions: u64) -> SessionGroup {
        SessionGroup { application: application.into(), host: "10.0.0.5".into(), login: "app".into(), database: database.into(), sessions }
    }

    #[test]
    fn a_connection_summary_adds_up_repeats_and_puts_the_busiest_first() {
        let summary = ConnectionSummary::from_groups([
            group("web", "ToyStore", 2),
            group("report", "Customer360", 1),
            group("web", "ToyStore", 3),
            group("batch", "ToyStore", 1),
            group("idle", "ToyStore", 0),
        ]);
        assert_eq!(summary.total_sessions, 7);
        assert_eq!(summary.groups[0], group("web", "ToyStore", 5));
        assert_eq!(summary.groups.len(), 3, "zero-session groups are not listed");
        assert_eq!(summary.databases, vec![
            DatabaseSessions { database: "ToyStore".into(), sessions: 6 },
            DatabaseSessions { database: "Customer360".into(), sessions: 1 },
        ]);
        assert_eq!((summary.sessions_on("ToyStore"), summary.sessions_on("nope")), (6, 0));
    }

    #[test]
    fn a_connection_summary_keeps_the_busiest_groups_and_counts_every_session() {
        let many = (0..ConnectionSummary::MAX_GROUPS as u64 + 5).map(|i| group(&format!("app{i:04}"), "db", 1 + u64::from(i == 7)));
        let summary = ConnectionSummary::from_groups(many);
        assert_eq!(summary.groups.len(), ConnectionSummary::MAX_GROUPS);
        assert_eq!(summary.groups_left_out, 5);
        assert_eq!(summary.groups[0].application, "app0007");
        assert_eq!(summary.total_sessions, ConnectionSummary::MAX_GROUPS as u64 + 6);
    }
}
