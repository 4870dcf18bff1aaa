//! A size for the target, from what the source shows: data size, transaction rate, connections.
//!
//! Pure arithmetic over a handful of observed numbers, so every threshold is tested without a server and
//! every number that moved the result is written into the recommendation's reasons. No prices: PostgreSQL
//! targets are sold by many providers at different rates and milink carries no sourced price list for them,
//! so `monthly_cost_usd` stays empty rather than invented.
use milink_core::assessment::Recommendation;

/// What the source showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Activity {
    /// Bytes of the databases that would be migrated.
    pub(crate) data_bytes: u64,
    /// Transactions (commits + rollbacks) counted since the statistics window began.
    pub(crate) transactions: u64,
    /// Length of that window, in seconds.
    pub(crate) window_seconds: f64,
    /// Sessions connected when assessed.
    pub(crate) connections: u64,
    /// The source's max_connections.
    pub(crate) max_connections: u64,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Storage sizes managed PostgreSQL offerings commonly sell (GiB).
const STORAGE_STEPS: [u64; 11] = [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768];

pub(crate) fn recommend(activity: &Activity) -> Recommendation {
    let mut reasons = Vec::new();
    let tps = if activity.window_seconds > 0.0 { activity.transactions as f64 / activity.window_seconds } else { 0.0 };
    let by_rate = match tps {
        t if t < 500.0 => 2,
        t if t < 2_000.0 => 4,
        t if t < 8_000.0 => 8,
        t if t < 20_000.0 => 16,
        _ => 32,
    };
    reasons.push(format!(
        "{tps:.1} transactions/s on average over {:.1} h of statistics → {by_rate} vCores",
        activity.window_seconds / 3600.0
    ));
    let by_connections = match activity.connections {
        c if c < 100 => 2,
        c if c < 200 => 4,
        c if c < 400 => 8,
        _ => 16,
    };
    reasons.push(format!(
        "{} sessions connected now (max_connections {}) → at least {by_connections} vCores",
        activity.connections, activity.max_connections
    ));
    let vcores = by_rate.max(by_connections);
    let memory_gib = f64::from(vcores) * 4.0;
    reasons.push(format!("{memory_gib} GiB memory: the 4 GiB per vCore of general-purpose tiers"));

    let data_gib = activity.data_bytes as f64 / GIB;
    // Room for growth, index rebuilds and the WAL a busy link retains while it catches up.
    let needed = data_gib * 1.5 + 8.0;
    let storage_gib = STORAGE_STEPS.iter().copied().find(|&step| step as f64 >= needed).unwrap_or(needed.ceil() as u64);
    reasons.push(format!(
        "{data_gib:.2} GiB of data × 1.5 for growth + 8 GiB for WAL retained during catch-up → {storage_gib} GiB \
         (the next common storage size)"
    ));
    reasons.push("no price: milink has no sourced price list for PostgreSQL targets".into());

    let days = activity.window_seconds / 86_400.0;
    let confidence = if activity.transactions == 0 || days < 1.0 {
        "Low"
    } else if days < 7.0 {
        "Medium"
    } else {
        "High"
    };
    reasons.push(format!(
        "confidence {confidence}: {days:.1} day(s) of statistics (more than 7 days of typical load gives High)"
    ));
    Recommendation {
        sku: format!("PostgreSQL {vcores} vCores / {memory_gib} GiB / {storage_gib} GiB"),
        vcores,
        memory_gib,
        storage_gib,
        monthly_cost_usd: None,
        reasons,
        confidence: confidence.into(),
        price_list: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> Activity {
        Activity {
            data_bytes: 10 * 1024 * 1024,
            transactions: 1_000,
            window_seconds: 3_600.0,
            connections: 5,
            max_connections: 100,
        }
    }

    #[test]
    fn a_small_quiet_server_gets_the_smallest_size_with_low_confidence() {
        let r = recommend(&activity());
        assert_eq!((r.vcores, r.memory_gib, r.storage_gib), (2, 8.0, 32));
        assert_eq!(r.confidence, "Low");
        assert_eq!(r.monthly_cost_usd, None);
        assert!(r.reasons.iter().any(|reason| reason.contains("transactions/s")));
    }

    #[test]
    fn load_connections_and_data_each_push_the_size_up() {
        let busy = Activity { transactions: 3_000 * 86_400 * 8, window_seconds: 86_400.0 * 8.0, ..activity() };
        let r = recommend(&busy);
        assert_eq!(r.vcores, 8);
        assert_eq!(r.confidence, "High");
        let crowded = Activity { connections: 250, ..activity() };
        assert_eq!(recommend(&crowded).vcores, 8);
        let big = Activity { data_bytes: 300 * 1024 * 1024 * 1024, ..activity() };
        assert_eq!(recommend(&big).storage_gib, 512);
    }

    #[test]
    fn no_statistics_window_means_no_rate() {
        let r = recommend(&Activity { window_seconds: 0.0, ..activity() });
        assert_eq!(r.vcores, 2);
        assert_eq!(r.confidence, "Low");
    }
}
