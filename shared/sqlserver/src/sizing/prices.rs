//! The price list and the monthly cost formula (assessment.md §5.4).
//!
//! Prices are data, not code: `data/prices.toml` names its source and date and says the figures are
//! estimates; a deployment can point `price_file` at its own list. The formula is the calculator's:
//! `vCores × (base + license if license-included) × 730 h + max(0, reserved GB − 32) × storage rate`.
use crate::rules::ServiceTier;
use milink_core::assessment::{PriceListOrigin, PriceListSource};
use serde::Deserialize;

/// The price list shipped with milink.
pub const DEFAULT_PRICES: &str = include_str!("../../data/prices.toml");

/// How the SQL license is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum License {
    /// Pay-as-you-go with the license included.
    LicenseIncluded,
    /// Azure Hybrid Benefit: bring your own license, pay the base rate.
    AzureHybridBenefit,
}

/// Prices of one tier.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct TierPrices {
    /// Base (AHB) compute per vCore-hour.
    pub compute_base_per_vcore_hour: f64,
    /// SQL license per vCore-hour (license-included only).
    pub license_per_vcore_hour: f64,
    /// Reserved storage per GB-month above the free allowance.
    pub storage_per_gb_month: f64,
}

#[derive(Debug, Clone, Deserialize)]
struct Tiers {
    general_purpose: TierPrices,
    business_critical: TierPrices,
    next_gen_general_purpose: TierPrices,
}

/// A price list.
#[derive(Debug, Clone, Deserialize)]
pub struct PriceList {
    /// Where the figures come from.
    pub source: String,
    /// When they were read.
    pub as_of: String,
    /// Azure region.
    pub region: String,
    /// Currency.
    pub currency: String,
    /// The figures are estimates.
    pub estimate: bool,
    /// Hours billed per month.
    pub hours_per_month: f64,
    /// Storage included per instance, GB.
    pub free_storage_gb: f64,
    tiers: Tiers,
    /// Built in or read from a deployment's file (not in the file itself).
    #[serde(skip, default = "from_file")]
    pub origin: PriceListOrigin,
}

fn from_file() -> PriceListOrigin {
    PriceListOrigin::File
}

impl PriceList {
    /// Parses a price list.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("invalid price file: {e}"))
    }

    /// The shipped list.
    pub fn shipped() -> Self {
        let mut list = Self::parse(DEFAULT_PRICES).expect("data/prices.toml is valid (tested)");
        list.origin = PriceListOrigin::BuiltIn;
        list
    }

    /// Where these prices come from and how old they are, for the report.
    pub fn source(&self) -> PriceListSource {
        PriceListSource {
            origin: self.origin,
            source: self.source.clone(),
            as_of: self.as_of.clone(),
            region: self.region.clone(),
            currency: self.currency.clone(),
            estimate: self.estimate,
        }
    }

    /// Prices of a tier.
    pub fn tier(&self, tier: ServiceTier) -> TierPrices {
        match tier {
            ServiceTier::GeneralPurpose => self.tiers.general_purpose,
            ServiceTier::NextGenGeneralPurpose => self.tiers.next_gen_general_purpose,
            ServiceTier::BusinessCritical => self.tiers.business_critical,
        }
    }

    /// Monthly compute cost.
    pub fn compute_per_month(&self, tier: ServiceTier, vcores: u32, license: License) -> f64 {
        let prices = self.tier(tier);
        let hourly = match license {
            License::LicenseIncluded => prices.compute_base_per_vcore_hour + prices.license_per_vcore_hour,
            License::AzureHybridBenefit => prices.compute_base_per_vcore_hour,
        };
        f64::from(vcores) * hourly * self.hours_per_month
    }

    /// Monthly storage cost for `reserved_gb` reserved.
    pub fn storage_per_month(&self, tier: ServiceTier, reserved_gb: f64) -> f64 {
        (reserved_gb - self.free_storage_gb).max(0.0) * self.tier(tier).storage_per_gb_month
    }

    /// Compute plus storage.
    pub fn monthly(&self, tier: ServiceTier, vcores: u32, reserved_gb: f64, license: License) -> f64 {
        self.compute_per_month(tier, vcores, license) + self.storage_per_month(tier, reserved_gb)
    }

    /// One line saying where the prices come from, for the recommendation's reasons.
    pub fn provenance(&self) -> String {
        format!(
            "prices: {} {}, as of {}{} — source: {}",
            self.region,
            self.currency,
            self.as_of,
            if self.estimate { ", ESTIMATES (verify with the Azure Retail Prices API)" } else { "" },
            self.source
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_parses_and_says_it_is_an_estimate() {
        let prices = PriceList::shipped();
        assert!(prices.estimate);
        assert_eq!(prices.hours_per_month, 730.0);
        assert!(prices.provenance().contains("ESTIMATES"));
        let source = prices.source();
        assert_eq!((source.origin, source.as_of.as_str(), source.estimate), (PriceListOrigin::BuiltIn, "2026-09-13", true));
        assert_eq!(PriceList::parse(DEFAULT_PRICES).unwrap().source().origin, PriceListOrigin::File, "a parsed file is a deployment's own");
    }

    #[test]
    fn formula_by_hand() {
        let prices = PriceList::shipped();
        // 4 × (0.152217 + 0.099966) × 730 = 736.37436; (512 − 32) × 0.115 = 55.2
        let cost = prices.monthly(ServiceTier::GeneralPurpose, 4, 512.0, License::LicenseIncluded);
        assert!((cost - 791.57436).abs() < 1e-6, "{cost}");
        // AHB: 4 × 0.152217 × 730 = 444.47364
        let cost = prices.monthly(ServiceTier::GeneralPurpose, 4, 32.0, License::AzureHybridBenefit);
        assert!((cost - 444.47364).abs() < 1e-6, "{cost}");
    }
}
