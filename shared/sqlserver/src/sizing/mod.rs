//! SKU recommendation: the cheapest managed instance that fits the observed workload (assessment.md §4.3).
//!
//! Pure arithmetic over captured samples, in three steps, each a function tests can check by hand:
//! 1. [`requirements`]: the 95th percentile (nearest rank) of each metric × the scaling factor — CPU as
//!    `p95(CPU %) / 100 × logical CPUs`, memory, IOPS, log MiB/s — and storage = data + log, reserved in 32 GB
//!    steps; In-Memory OLTP, database and file counts as constraints.
//! 2. [`candidates`]: every (tier, vCores) of standard-series General Purpose, Next-gen General Purpose and
//!    Business Critical, rejected when any limit of [`limits`] is below a requirement.
//! 3. [`recommend`]: the cheapest survivor per the price list (ties: fewer vCores, then GP < Next-gen < BC),
//!    with the reasons and a confidence from how much of the sampling window was covered.
use crate::inventory::Inventory;
use crate::rules::ServiceTier;
use milink_core::assessment::Recommendation;

pub mod limits;
pub mod prices;

pub use prices::{License, PriceList};

/// Knobs of the recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct SizingOptions {
    /// Percentile of the samples that sizes the target (95).
    pub percentile: f64,
    /// Headroom multiplier (1.0 = none; DMA's "scaling factor" 100 %).
    pub scaling_factor: f64,
    /// How the license is paid.
    pub license: License,
}

impl Default for SizingOptions {
    fn default() -> Self {
        Self { percentile: 95.0, scaling_factor: 1.0, license: License::LicenseIncluded }
    }
}

/// What the workload needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirements {
    /// vCores (fractional).
    pub vcores: f64,
    /// Memory, GB.
    pub memory_gb: f64,
    /// IOPS.
    pub iops: f64,
    /// Log write, MiB/s.
    pub log_mib_per_second: f64,
    /// Data + log, GB, before rounding.
    pub storage_gb: f64,
    /// Storage to reserve, GB (multiple of 32, at least 32).
    pub reserved_storage_gb: f64,
    /// In-Memory OLTP in use: Business Critical only.
    pub in_memory_oltp: bool,
    /// User databases.
    pub databases: usize,
    /// Database files.
    pub files: u32,
    /// Size of each file, MB (GP IOPS).
    pub file_sizes_mb: Vec<f64>,
    /// How each figure was derived, in words.
    pub reasons: Vec<String>,
    /// `High`, `Medium`, `Low`.
    pub confidence: &'static str,
}

/// The value at or below which `percentile` % of the samples lie (nearest rank); `None` without samples.
pub fn percentile(samples: &[f64], percentile: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = ((percentile / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Rounds storage up to the 32 GB reservation step (at least one step).
pub fn reserved_storage(storage_gb: f64) -> f64 {
    ((storage_gb / limits::STORAGE_STEP_GB).ceil().max(1.0)) * limits::STORAGE_STEP_GB
}

/// Confidence from the share of the window covered (Azure Migrate's star bands: >60 % High, >20 % Medium).
/// I/O comes from two snapshots unless more were collected, which caps confidence at Medium.
pub fn confidence(cpu_points: usize, cpu_points_expected: u32, io_points: usize) -> &'static str {
    let expected = if cpu_points_expected == 0 { 256.0 } else { f64::from(cpu_points_expected) };
    let coverage = cpu_points as f64 / expected;
    match coverage {
        c if c > 0.6 && io_points >= 10 => "High",
        c if c > 0.2 => "Medium",
        _ => "Low",
    }
}

/// Step 1: requirements from the inventory's workload and databases.
pub fn requirements(inventory: &Inventory, options: &SizingOptions) -> Requirements {
    let workload = &inventory.workload;
    let scale = options.scaling_factor;
    let p = options.percentile;
    let cpus = f64::from(inventory.instance.cpu_count.max(1));
    let mut reasons = Vec::new();
    let vcores = match percentile(&workload.cpu_percent, p) {
        Some(cpu) => {
            let need = cpu / 100.0 * cpus * scale;
            reasons.push(format!("CPU: p{p:.0} of {} one-minute samples is {cpu:.1} % of {cpus:.0} logical CPUs × scaling {scale:.2} = {need:.2} vCores", workload.cpu_percent.len()));
            need
        }
        None => {
            reasons.push(format!("CPU: no samples; sized as on premises: {cpus:.0} logical CPUs × scaling {scale:.2}"));
            cpus * scale
        }
    };
    let memory_gb = percentile(&workload.memory_mb, p).map_or(0.0, |mb| mb / 1024.0 * scale);
    reasons.push(format!("memory: p{p:.0} in use × scaling = {memory_gb:.1} GB"));
    let iops = percentile(&workload.iops, p).map_or(0.0, |v| v * scale);
    reasons.push(format!("IOPS: p{p:.0} × scaling = {iops:.0} ({} samples)", workload.iops.len()));
    let log = percentile(&workload.log_mb_per_second, p).map_or(0.0, |v| v * scale);
    reasons.push(format!("log write: p{p:.0} × scaling = {log:.2} MiB/s"));
    let storage_gb: f64 = inventory.databases.iter().map(|d| d.size_gb()).sum();
    let reserved_storage_gb = reserved_storage(storage_gb);
    reasons.push(format!("storage: {storage_gb:.1} GB of data and log files → {reserved_storage_gb:.0} GB reserved (32 GB steps)"));
    let in_memory_oltp = inventory.databases.iter().any(|d| d.memory_optimized_filegroups > 0 || d.memory_optimized_tables > 0);
    if in_memory_oltp {
        reasons.push("In-Memory OLTP is used: only Business Critical can take it".into());
    }
    Requirements {
        vcores,
        memory_gb,
        iops,
        log_mib_per_second: log,
        storage_gb,
        reserved_storage_gb,
        in_memory_oltp,
        databases: inventory.databases.len(),
        files: inventory.databases.iter().map(|d| d.data_files + d.log_files).sum(),
        file_sizes_mb: workload.file_sizes_mb.clone(),
        reasons,
        confidence: confidence(workload.cpu_percent.len(), workload.cpu_points_expected, workload.iops.len()),
    }
}

/// One size that fits.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Tier.
    pub tier: ServiceTier,
    /// vCores.
    pub vcores: u32,
    /// Storage to reserve, GB.
    pub reserved_storage_gb: f64,
    /// Monthly cost.
    pub monthly_cost: f64,
}

impl Candidate {
    /// `General Purpose 4 vCores`.
    pub fn label(&self) -> String {
        format!("{} {} vCores (standard-series)", self.tier.label(), self.vcores)
    }
}

const TIERS: [ServiceTier; 3] = [ServiceTier::GeneralPurpose, ServiceTier::NextGenGeneralPurpose, ServiceTier::BusinessCritical];

/// Step 2: every size whose limits cover the requirements, priced, cheapest first.
pub fn candidates(need: &Requirements, prices: &PriceList, license: License) -> Vec<Candidate> {
    let mut fits = Vec::new();
    for tier in TIERS {
        if need.in_memory_oltp && !limits::supports_in_memory_oltp(tier) {
            continue;
        }
        if need.databases > limits::max_databases(tier) || limits::max_files(tier).is_some_and(|max| need.files > max) {
            continue;
        }
        for &vcores in limits::VCORES {
            let max_storage = limits::max_storage_gb(tier, vcores);
            let mut reserved = need.reserved_storage_gb;
            if tier == ServiceTier::NextGenGeneralPurpose && 3.0 * reserved < need.iops {
                // Next-gen IOPS grow with reserved storage: reserve enough storage to get the IOPS.
                reserved = reserved_storage(need.iops / 3.0);
            }
            let fits_all = f64::from(vcores) >= need.vcores
                && f64::from(vcores) * limits::MEMORY_GB_PER_VCORE >= need.memory_gb
                && reserved <= max_storage
                && limits::iops_limit(tier, vcores, reserved, &need.file_sizes_mb) >= need.iops
                && limits::log_rate_limit(tier, vcores) >= need.log_mib_per_second;
            if fits_all {
                fits.push(Candidate { tier, vcores, reserved_storage_gb: reserved, monthly_cost: prices.monthly(tier, vcores, reserved, license) });
            }
        }
    }
    fits.sort_by(|a, b| a.monthly_cost.total_cmp(&b.monthly_cost).then(a.vcores.cmp(&b.vcores)).then(a.tier.cmp(&b.tier)));
    fits
}

/// Step 3: the recommendation, or why nothing fits.
pub fn recommend(inventory: &Inventory, options: &SizingOptions, prices: &PriceList) -> Result<Recommendation, String> {
    let need = requirements(inventory, options);
    let fits = candidates(&need, prices, options.license);
    let Some(best) = fits.first() else {
        return Err(format!(
            "no standard-series managed instance fits: {:.1} vCores, {:.0} GB memory, {:.0} GB storage, {:.0} IOPS, {:.1} MiB/s log{}",
            need.vcores,
            need.memory_gb,
            need.reserved_storage_gb,
            need.iops,
            need.log_mib_per_second,
            if need.in_memory_oltp { ", In-Memory OLTP" } else { "" }
        ));
    };
    let mut reasons = need.reasons.clone();
    let license = match options.license {
        License::LicenseIncluded => "license included",
        License::AzureHybridBenefit => "Azure Hybrid Benefit",
    };
    reasons.push(format!(
        "cheapest of {} sizes that fit: {} at {:.2} {}/month ({license}, {} h/month, {:.0} GB reserved)",
        fits.len(),
        best.label(),
        best.monthly_cost,
        prices.currency,
        prices.hours_per_month,
        best.reserved_storage_gb
    ));
    for tier in TIERS.iter().filter(|t| **t != best.tier) {
        if let Some(alternative) = fits.iter().find(|c| c.tier == *tier) {
            reasons.push(format!("next in {}: {} at {:.2} {}/month", tier.label(), alternative.label(), alternative.monthly_cost, prices.currency));
        }
    }
    reasons.push(prices.provenance());
    Ok(Recommendation {
        sku: best.label(),
        vcores: best.vcores,
        memory_gib: f64::from(best.vcores) * limits::MEMORY_GB_PER_VCORE,
        storage_gib: best.reserved_storage_gb as u64,
        monthly_cost_usd: (prices.currency == "USD").then_some((best.monthly_cost * 100.0).round() / 100.0),
        reasons,
        confidence: need.confidence.to_owned(),
        price_list: Some(prices.source()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentile() {
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&samples, 95.0), Some(19.0));
        assert_eq!(percentile(&samples, 100.0), Some(20.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 95.0), None);
    }

    #[test]
    fn storage_is_reserved_in_32_gb_steps() {
        assert_eq!(reserved_storage(0.0), 32.0);
        assert_eq!(reserved_storage(32.0), 32.0);
        assert_eq!(reserved_storage(500.0), 512.0);
        assert_eq!(reserved_storage(513.0), 544.0);
    }
}
