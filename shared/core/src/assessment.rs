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
        };
        let report = report.completed(assessment, Utc::now());
        assert_eq!(report.databases[0].readiness, Readiness::NotReady);
        assert_eq!(report.blockers_for("db").unwrap().len(), 1);
        assert!(report.blockers_for("other").is_none());
    }
}
