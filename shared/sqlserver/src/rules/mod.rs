//! Assessment rules: an [`Inventory`] in, findings out, no I/O.
//!
//! Two rule sets, as in assessment.md: [`compat`] and [`code`] are the MI compatibility list (§1, the rule
//! ids of DMA / Azure Migrate / Arc, with their severities; [`code`] holds the rules that scan module text),
//! [`link`] the MI link readiness checks (§2). Both are pure
//! functions of the captured inventory and, when a target is known (validation), of the managed instance's
//! facts ([`TargetFacts`]); without a target (assessment) the size limit is the largest any tier offers and
//! In-Memory OLTP is a warning rather than a blocker. Per-database readiness is rolled up the way Microsoft's
//! tools do it (§1.4): any blocker → Not ready, any warning → Ready with warnings — by the core's
//! `readiness`, including instance blockers, which block every database.
use crate::inventory::{DatabaseFacts, Inventory};
use crate::versions::UpdatePolicy;
use milink_core::assessment::{readiness, Assessment, DatabaseAssessment, Finding, Readiness, Severity};

pub mod code;
pub mod compat;
pub mod link;

/// Service tiers of a managed instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum ServiceTier {
    /// General Purpose.
    GeneralPurpose,
    /// Next-gen General Purpose.
    NextGenGeneralPurpose,
    /// Business Critical.
    BusinessCritical,
}

impl ServiceTier {
    /// The name users know.
    pub fn label(self) -> &'static str {
        match self {
            ServiceTier::GeneralPurpose => "General Purpose",
            ServiceTier::NextGenGeneralPurpose => "Next-gen General Purpose",
            ServiceTier::BusinessCritical => "Business Critical",
        }
    }

    /// From ARM's `sku.tier` (`GeneralPurpose`, `BusinessCritical`); Next-gen GP reports `GeneralPurpose`
    /// with `isGeneralPurposeV2`, so the caller passes that flag.
    pub fn from_arm(tier: &str, next_gen: bool) -> Option<Self> {
        match tier {
            "GeneralPurpose" if next_gen => Some(Self::NextGenGeneralPurpose),
            "GeneralPurpose" => Some(Self::GeneralPurpose),
            "BusinessCritical" => Some(Self::BusinessCritical),
            _ => None,
        }
    }
}

/// Largest reserved storage any tier offers (Next-gen GP, 32 TB): the size limit when no target is known.
pub const LARGEST_INSTANCE_STORAGE_GB: f64 = 32.0 * 1024.0;

/// What is known about the target managed instance (validation); all `None` during assessment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetFacts {
    /// Its tier.
    pub tier: Option<ServiceTier>,
    /// Storage it can hold for this database, GB (reserved storage minus what other databases use).
    pub storage_available_gb: Option<f64>,
    /// Its update policy.
    pub update_policy: Option<UpdatePolicy>,
    /// Its collation.
    pub collation: Option<String>,
}

/// Instance findings plus per-database findings for every user database.
pub fn evaluate(inventory: &Inventory, target: &TargetFacts) -> Assessment {
    let mut instance_findings = compat::instance_findings(inventory, target);
    instance_findings.extend(link::instance_findings(inventory, target));
    let instance_blockers: Vec<&Finding> =
        instance_findings.iter().filter(|f| f.severity == Severity::Blocker).collect();
    let databases = inventory
        .databases
        .iter()
        .map(|db| {
            let findings = database_findings(inventory, db, target);
            DatabaseAssessment {
                name: db.name.clone(),
                readiness: readiness(findings.iter().chain(instance_blockers.iter().copied())),
                size_bytes: Some(((db.data_size_mb + db.log_size_mb) * 1024.0 * 1024.0) as u64),
                findings,
            }
        })
        .collect();
    Assessment {
        server_version: format!("{} ({})", inventory.instance.product_version, inventory.instance.edition),
        instance_findings,
        databases,
        recommendation: None,
        connection_summary: None,
    }
}

/// Findings for one database: compatibility, then link readiness.
pub fn database_findings(inventory: &Inventory, db: &DatabaseFacts, target: &TargetFacts) -> Vec<Finding> {
    let mut findings = compat::database_findings(db, target);
    findings.extend(code::database_findings(db));
    findings.extend(link::database_findings(inventory, db, target));
    findings
}

/// Readiness of one database, instance blockers included (what [`evaluate`] computes for each).
pub fn database_readiness(assessment: &Assessment, database: &str) -> Option<Readiness> {
    assessment.databases.iter().find(|d| d.name == database).map(|d| d.readiness)
}
