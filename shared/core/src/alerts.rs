//! Alerts: conditions an operator of a fleet must hear about without watching every migration, raised
//! once when they start and once when they clear (deduplicated), never again while they hold.
//!
//! - `linkStalled`: the migration's status is Stalled (the link's own problem, no progress, a step that
//!   keeps failing). A disabled subscription shows up here, with the engine's reason.
//! - `slotInactive`: the engine reports that nothing has used the link's replication slot on the source
//!   for a while (PostgreSQL: 15 s; the slot keeps the source's WAL while no one reads it). Raised from the
//!   observation itself, so within a poll tick of the engine seeing it, and on its own even when the link
//!   also counts as stalled: the remedy differs (the target cannot reach the source).
//! - `lagGrowing`: the lag has grown at every observation, without once shrinking, for
//!   [`AlertSettings::lag_growing_minutes`]: the target applies slower than the source writes.
//! - `walRetained`: the link's lag in bytes (the WAL the source keeps in the slot for the target) is above
//!   [`AlertSettings::wal_retained_bytes`]: the source's disk is at risk.
//!
//! Pure: the [`Tracker`] is fed the migrations each poll tick and says which alerts to send; the runtime
//! sends them (log and webhook) and stores on each migration what is raised now ([`Tracker::raised_for`]
//! into `Migration::alerts`). What is raised is what the migration says, never the tracker's memory, so a
//! restart, or the Azure timer moving between instances (and back), neither raises a condition that
//! still holds again nor clears one twice. A store that fails to save it means one repeat, no loss. (The
//! lag trend behind `lagGrowing` is memory only: after a restart its window starts again.) A migration
//! that finishes drops its alerts (the flow clears them): nothing polls it to send a clear.
use crate::migration::{Migration, ProblemKind, Status};
use crate::names::MigrationId;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[alerts]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Where alerts are POSTed as JSON (they are always logged). Its query string is never logged.
    pub webhook_url: Option<String>,
    /// Minutes of a lag that only grows before `lagGrowing`.
    pub lag_growing_minutes: u64,
    /// Bytes of WAL held for a link before `walRetained`.
    pub wal_retained_bytes: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self { webhook_url: None, lag_growing_minutes: 10, wal_retained_bytes: 10 * 1024 * 1024 * 1024 }
    }
}

/// Which condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertKind {
    /// Status Stalled.
    LinkStalled,
    /// The link's replication slot is not used by anyone.
    SlotInactive,
    /// Lag growing for N minutes.
    LagGrowing,
    /// WAL retained above the threshold.
    WalRetained,
}

/// One alert to send.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The condition.
    pub alert: AlertKind,
    /// True when raised, false when the condition cleared.
    pub raised: bool,
    /// The migration.
    pub migration_id: MigrationId,
    /// Its database.
    pub database: String,
    /// Source connection.
    pub source: String,
    /// Target connection.
    pub target: String,
    /// What is wrong, in words, with what to do.
    pub message: String,
    /// Since when the condition holds.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
struct LagTrend {
    last_at: Option<DateTime<Utc>>,
    last_lag: u64,
    growing_since: Option<DateTime<Utc>>,
}

/// What has been raised, and each link's lag trend.
#[derive(Debug, Default)]
pub struct Tracker {
    /// What each migration's alerts are after the last check: what the runtime stores.
    latest: BTreeMap<MigrationId, BTreeMap<AlertKind, DateTime<Utc>>>,
    lag: BTreeMap<MigrationId, LagTrend>,
}

impl Tracker {
    /// Looks at `migrations` (the active ones) at `now`; returns the alerts to send.
    pub fn check(&mut self, migrations: &[Migration], now: DateTime<Utc>, settings: &AlertSettings) -> Vec<Alert> {
        let mut out = Vec::new();
        self.latest.clear();
        for m in migrations {
            let mut raised = m.alerts.clone();
            for (kind, condition) in self.conditions(m, now, settings) {
                match (condition, raised.get(&kind).copied()) {
                    (Some((since, message)), None) => {
                        raised.insert(kind, since);
                        out.push(alert(m, kind, true, message, since));
                    }
                    (None, Some(since)) => {
                        raised.remove(&kind);
                        out.push(alert(m, kind, false, format!("{}: cleared", describe(kind)), since));
                    }
                    _ => {}
                }
            }
            self.latest.insert(m.id.clone(), raised);
        }
        // Migrations that finished or vanished: forget their lag trend.
        let live: std::collections::BTreeSet<&MigrationId> = migrations.iter().map(|m| &m.id).collect();
        self.lag.retain(|id, _| live.contains(id));
        out
    }

    /// What is raised for `id` after the last check, with since when: what the runtime stores on the
    /// migration (the next check starts from it).
    pub fn raised_for(&self, id: &MigrationId) -> BTreeMap<AlertKind, DateTime<Utc>> {
        self.latest.get(id).cloned().unwrap_or_default()
    }

    #[allow(clippy::type_complexity)]
    fn conditions(&mut self, m: &Migration, now: DateTime<Utc>, settings: &AlertSettings) -> [(AlertKind, Option<(DateTime<Utc>, String)>); 4] {
        let stalled = (m.status() == Status::Stalled).then(|| {
            let since = m.stall.as_ref().map_or(now, |s| s.since);
            let reason = m.reason().unwrap_or_default();
            let remediation = m.remediation().unwrap_or_default();
            (since, format!("{} is stalled: {reason}. {remediation}", m.database))
        });
        let observation = m.observation.as_ref();
        let inactive = observation
            .and_then(|o| o.problem.as_ref().filter(|p| p.kind == Some(ProblemKind::SlotInactive)).map(|p| (o.at, p)))
            .map(|(at, p)| (at, format!("{}: {}. {}", m.database, p.reason, p.remediation)));
        let lag = observation.and_then(|o| o.lag_bytes);
        let trend = self.lag.entry(m.id.clone()).or_default();
        if let (Some(o), Some(lag)) = (observation, lag) {
            if trend.last_at.is_none_or(|at| o.at > at) {
                match trend.last_at {
                    Some(_) if lag > trend.last_lag => {
                        trend.growing_since.get_or_insert(o.at);
                    }
                    Some(_) if lag < trend.last_lag => trend.growing_since = None,
                    _ => {}
                }
                trend.last_at = Some(o.at);
                trend.last_lag = lag;
            }
        }
        let window = Duration::minutes(settings.lag_growing_minutes as i64);
        let growing = trend.growing_since.filter(|since| now - *since >= window).map(|since| {
            let message = format!(
                "{}: the lag has only grown for {} minutes (now {} bytes): the target applies slower than the source writes; check the target's load and the apply worker",
                m.database, settings.lag_growing_minutes, trend.last_lag
            );
            (since, message)
        });
        let retained = lag.filter(|lag| *lag > settings.wal_retained_bytes).map(|lag| {
            let message = format!(
                "{}: the source keeps {lag} bytes of WAL for this link (threshold {}): watch the source's disk; find why the target does not confirm (lag, stalled apply)",
                m.database, settings.wal_retained_bytes
            );
            (m.observation.as_ref().map_or(now, |o| o.at), message)
        });
        [(AlertKind::LinkStalled, stalled), (AlertKind::SlotInactive, inactive), (AlertKind::LagGrowing, growing), (AlertKind::WalRetained, retained)]
    }
}

fn describe(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::LinkStalled => "link stalled",
        AlertKind::SlotInactive => "replication slot inactive",
        AlertKind::LagGrowing => "lag growing",
        AlertKind::WalRetained => "WAL retained above the threshold",
    }
}

fn alert(m: &Migration, kind: AlertKind, raised: bool, message: String, since: DateTime<Utc>) -> Alert {
    Alert {
        alert: kind,
        raised,
        migration_id: m.id.clone(),
        database: m.database.to_string(),
        source: m.source.to_string(),
        target: m.target.to_string(),
        message,
        since,
    }
}

#[cfg(test)]
#[path = "alerts_tests.rs"]
mod tests;
