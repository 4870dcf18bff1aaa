//! Resource limits of Azure SQL Managed Instance, standard-series (Gen5) hardware (assessment.md §3).
//!
//! Only standard-series is modelled because it is the hardware with prices in the data file; premium-series
//! limits are larger, so a fit here also fits there. Figures are from `resource-limits.md` (ms.date
//! 08/10/2026); two are derived and marked so: the Next-gen IOPS cap per vCore (interpolated between the
//! documented 6,400 at 4 vCores and 80,000 at 56+), and GP IOPS computed per source file size.
use crate::rules::ServiceTier;

/// vCore sizes offered on standard-series for every tier.
pub const VCORES: &[u32] = &[4, 8, 16, 24, 32, 40, 64, 80];

/// Memory per vCore on standard-series, GB.
pub const MEMORY_GB_PER_VCORE: f64 = 5.1;

/// Reserved storage is bought in steps of this many GB.
pub const STORAGE_STEP_GB: f64 = 32.0;

const TB: f64 = 1024.0;

/// Largest reserved storage for a tier and size, GB.
pub fn max_storage_gb(tier: ServiceTier, vcores: u32) -> f64 {
    match tier {
        ServiceTier::GeneralPurpose => match vcores {
            0..=4 => 2.0 * TB,
            5..=8 => 8.0 * TB,
            _ => 16.0 * TB,
        },
        ServiceTier::NextGenGeneralPurpose => match vcores {
            0..=4 => 2.0 * TB,
            5..=8 => 8.0 * TB,
            9..=24 => 16.0 * TB,
            _ => 32.0 * TB,
        },
        ServiceTier::BusinessCritical => match vcores {
            0..=16 => TB,
            17..=24 => 2.0 * TB,
            _ => 4.0 * TB,
        },
    }
}

/// IOPS a General Purpose file gets, by its size (the GP storage tiers).
pub fn general_purpose_file_iops(file_size_mb: f64) -> f64 {
    let gib = file_size_mb / 1024.0;
    if gib <= 129.0 {
        500.0
    } else if gib <= 513.0 {
        2_300.0
    } else if gib <= 1_025.0 {
        5_000.0
    } else {
        7_500.0
    }
}

/// IOPS the instance can do.
///
/// General Purpose: the sum over files of the per-file figure (the source's file sizes stand in for the
/// target's). Next-gen: 3 IOPS per reserved GB (at least 300), capped at 1,600 per vCore up to 80,000
/// (derived). Business Critical: 4,000 per vCore.
pub fn iops_limit(tier: ServiceTier, vcores: u32, reserved_gb: f64, file_sizes_mb: &[f64]) -> f64 {
    match tier {
        ServiceTier::GeneralPurpose => file_sizes_mb.iter().map(|size| general_purpose_file_iops(*size)).sum::<f64>().max(500.0),
        ServiceTier::NextGenGeneralPurpose => (3.0 * reserved_gb).max(300.0).min(next_gen_iops_cap(vcores)),
        ServiceTier::BusinessCritical => 4_000.0 * f64::from(vcores),
    }
}

/// The most IOPS a Next-gen instance of this size takes, whatever storage is reserved (derived).
pub fn next_gen_iops_cap(vcores: u32) -> f64 {
    (1_600.0 * f64::from(vcores)).min(80_000.0)
}

/// Log write throughput, MiB/s.
pub fn log_rate_limit(tier: ServiceTier, vcores: u32) -> f64 {
    let per_vcore = 4.5 * f64::from(vcores);
    match tier {
        ServiceTier::GeneralPurpose => per_vcore.min(120.0),
        ServiceTier::NextGenGeneralPurpose => per_vcore.min(192.0),
        ServiceTier::BusinessCritical => per_vcore.min(96.0),
    }
}

/// Databases one instance holds.
pub fn max_databases(tier: ServiceTier) -> usize {
    match tier {
        ServiceTier::NextGenGeneralPurpose => 500,
        _ => 100,
    }
}

/// Files one instance holds (General Purpose only has an instance-wide limit).
pub fn max_files(tier: ServiceTier) -> Option<u32> {
    (tier == ServiceTier::GeneralPurpose).then_some(280)
}

/// In-Memory OLTP support.
pub fn supports_in_memory_oltp(tier: ServiceTier) -> bool {
    tier == ServiceTier::BusinessCritical
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_figures() {
        assert_eq!(max_storage_gb(ServiceTier::GeneralPurpose, 4), 2048.0);
        assert_eq!(max_storage_gb(ServiceTier::NextGenGeneralPurpose, 32), 32768.0);
        assert_eq!(max_storage_gb(ServiceTier::BusinessCritical, 24), 2048.0);
        assert_eq!(iops_limit(ServiceTier::BusinessCritical, 4, 0.0, &[]), 16_000.0);
        assert_eq!(iops_limit(ServiceTier::BusinessCritical, 80, 0.0, &[]), 320_000.0);
        assert_eq!(next_gen_iops_cap(4), 6_400.0);
        assert_eq!(next_gen_iops_cap(64), 80_000.0);
        assert_eq!(log_rate_limit(ServiceTier::GeneralPurpose, 40), 120.0);
        assert_eq!(log_rate_limit(ServiceTier::BusinessCritical, 8), 36.0);
    }
}
