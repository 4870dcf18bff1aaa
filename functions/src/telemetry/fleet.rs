//! The gauges read from the store: one snapshot of the fleet (every migration, and the host's queue when it
//! has one), taken when someone reads the metrics, and observed by OpenTelemetry gauges.
//!
//! OpenTelemetry reads gauges through synchronous callbacks, and the store is async: so the snapshot is
//! taken first ([`refresh`]) and the callbacks read it. `/metrics` refreshes it on every scrape; when an
//! OTLP exporter reads the gauges on its own schedule, the sync timer's tick refreshes it (at most every
//! [`EXPORT_REFRESH`]), so exported values are never older than that plus the export interval.
use crate::context::Context;
use chrono::{DateTime, Utc};
use milink_core::migration::{Migration, Status};
use milink_core::ports::{MigrationFilter, StoreError};
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the sync timer refreshes the snapshot for an OTLP exporter.
pub const EXPORT_REFRESH: Duration = Duration::from_secs(10);

/// A host's own queue, as the gauges see it.
#[async_trait::async_trait]
pub trait QueueGauges: Send + Sync {
    /// Depth, oldest message and stored dead letters, now.
    async fn queue_gauges(&self) -> Result<QueueSnapshot, StoreError>;
}

/// The queue at one moment.
#[derive(Debug, Clone, Default)]
pub struct QueueSnapshot {
    /// Messages waiting or in flight.
    pub depth: u64,
    /// When the oldest of them was enqueued.
    pub oldest_enqueued_at: Option<DateTime<Utc>>,
    /// Dead letters kept.
    pub dead_letters: u64,
}

#[async_trait::async_trait]
impl QueueGauges for milink_sqlite::SqliteStore {
    async fn queue_gauges(&self) -> Result<QueueSnapshot, StoreError> {
        let stats = self.queue_stats().await?;
        Ok(QueueSnapshot { depth: stats.depth, oldest_enqueued_at: stats.oldest_enqueued_at, dead_letters: stats.dead_letters })
    }
}

/// One live migration's gauges.
struct Row {
    labels: Vec<KeyValue>,
    lag_bytes: Option<f64>,
    lag_seconds: Option<f64>,
    progress_percent: Option<f64>,
    seed_copied_bytes: Option<f64>,
    seed_total_bytes: Option<f64>,
    seed_eta_seconds: Option<f64>,
    verification_running: f64,
    verification_differences: Option<f64>,
    verification_complete: Option<f64>,
    verification_rows: Option<f64>,
}

#[derive(Default)]
struct Snapshot {
    by_status: BTreeMap<&'static str, u64>,
    rows: Vec<Row>,
    queue: Option<QueueSnapshot>,
    taken: Option<Instant>,
}

static SNAPSHOT: Mutex<Option<Snapshot>> = Mutex::new(None);
static QUEUE: OnceLock<Arc<dyn QueueGauges>> = OnceLock::new();
static EXPORTING: OnceLock<bool> = OnceLock::new();

/// The host's queue (the embedded dispatcher registers SQLite's at start; the Azure host has Service
/// Bus, whose depth Azure Monitor already shows).
pub fn watch_queue(queue: Arc<dyn QueueGauges>) {
    let _ = QUEUE.set(queue);
}

/// Takes a new snapshot from the store. A store error keeps the previous one (and says so in the log).
pub async fn refresh(ctx: &Context) {
    let migrations = match ctx.migrations.list(&MigrationFilter { active_only: false }).await {
        Ok(migrations) => migrations,
        Err(error) => return tracing::warn!(%error, "metrics: cannot list migrations; gauges keep their last values"),
    };
    let queue = match QUEUE.get() {
        Some(queue) => queue.queue_gauges().await.map_err(|error| tracing::warn!(%error, "metrics: cannot read the queue")).ok(),
        None => None,
    };
    let mut snapshot = Snapshot { queue, taken: Some(Instant::now()), ..Snapshot::default() };
    for migration in &migrations {
        let status = migration.status();
        *snapshot.by_status.entry(status.as_str()).or_default() += 1;
        if !is_finished(&status) {
            snapshot.rows.push(row(migration, &status));
        }
    }
    *SNAPSHOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(snapshot);
}

/// For the sync timer: refreshes when an OTLP exporter reads the gauges and the snapshot is older than
/// [`EXPORT_REFRESH`].
pub async fn refresh_for_export(ctx: &Context) {
    if !EXPORTING.get().copied().unwrap_or(false) {
        return;
    }
    let taken = SNAPSHOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref().and_then(|s| s.taken);
    if !matches!(taken, Some(taken) if taken.elapsed() < EXPORT_REFRESH) {
        refresh(ctx).await;
    }
}

fn is_finished(status: &Status) -> bool {
    matches!(status, Status::Completed | Status::FailedBack | Status::Failed | Status::Cancelled)
}

fn row(m: &Migration, status: &Status) -> Row {
    let observation = m.observation.as_ref();
    let last = m.verify.last.as_ref();
    Row {
        labels: vec![
            KeyValue::new("source", m.source.to_string()),
            KeyValue::new("target", m.target.to_string()),
            KeyValue::new("database", m.database.to_string()),
            KeyValue::new("status", status.as_str()),
        ],
        lag_bytes: observation.and_then(|o| o.lag_bytes).map(|bytes| bytes as f64),
        lag_seconds: observation.and_then(|o| o.lag_seconds),
        progress_percent: observation.map(|o| o.progress_percent),
        seed_copied_bytes: observation.and_then(|o| o.seed.as_ref()).map(|s| s.copied_bytes as f64),
        seed_total_bytes: observation.and_then(|o| o.seed.as_ref()).map(|s| s.total_bytes as f64),
        seed_eta_seconds: observation.and_then(|o| o.seed.as_ref()).and_then(|s| s.eta_seconds),
        verification_running: if m.verify.running.is_some() { 1.0 } else { 0.0 },
        verification_differences: last.map(|v| (v.mismatches().len() + v.differences.len()) as f64),
        verification_complete: last.map(|v| if v.complete { 1.0 } else { 0.0 }),
        verification_rows: last.map(|v| v.rows_compared as f64),
    }
}

fn with_snapshot(read: impl FnOnce(&Snapshot)) {
    if let Some(snapshot) = SNAPSHOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref() {
        read(snapshot);
    }
}

type PerMigration = fn(&Row) -> Option<f64>;

/// The gauges, on `meter`; each callback reads the latest snapshot.
pub(super) fn install(meter: &Meter, exporting: bool) {
    let _ = EXPORTING.set(exporting);
    let per_migration: [(&'static str, &'static str, &'static str, PerMigration); 10] = [
        ("milink_migration_lag_bytes", "By", "Bytes the target is behind the source (live migrations)", |r| r.lag_bytes),
        ("milink_migration_lag_seconds", "s", "Seconds the target is behind the source (live migrations)", |r| r.lag_seconds),
        ("milink_migration_seeding_progress_percent", "%", "Initial copy progress, 0-100 (live migrations)", |r| r.progress_percent),
        ("milink_migration_seeding_copied_bytes", "By", "Bytes of the source copied to the target so far (while seeding)", |r| r.seed_copied_bytes),
        ("milink_migration_seeding_total_bytes", "By", "Bytes the initial copy has to copy (while seeding)", |r| r.seed_total_bytes),
        ("milink_migration_seeding_eta_seconds", "s", "Seconds left in the initial copy at the rate so far (while seeding, when known)", |r| {
            r.seed_eta_seconds
        }),
        ("milink_migration_verification_running", "1", "1 while an on-demand verification runs", |r| Some(r.verification_running)),
        ("milink_migration_verification_differences", "1", "Tables and objects that differed in the last verification", |r| {
            r.verification_differences
        }),
        ("milink_migration_verification_complete", "1", "1 when the last verification compared every table in scope", |r| {
            r.verification_complete
        }),
        ("milink_migration_verification_rows_compared", "1", "Rows the last verification compared on each side", |r| r.verification_rows),
    ];
    for (name, unit, description, value) in per_migration {
        meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                with_snapshot(|s| s.rows.iter().for_each(|row| value(row).into_iter().for_each(|v| observer.observe(v, &row.labels))))
            })
            .build();
    }
    meter
        .u64_observable_gauge("milink_migrations")
        .with_description("Migrations by status (finished ones included)")
        .with_callback(|observer| {
            with_snapshot(|s| s.by_status.iter().for_each(|(status, n)| observer.observe(*n, &[KeyValue::new("status", *status)])))
        })
        .build();
    install_queue(meter);
}

fn install_queue(meter: &Meter) {
    meter
        .u64_observable_gauge("milink_queue_depth")
        .with_description("Messages waiting or in flight in the host's queue (embedded host)")
        .with_callback(|observer| with_snapshot(|s| s.queue.iter().for_each(|q| observer.observe(q.depth, &[]))))
        .build();
    meter
        .f64_observable_gauge("milink_queue_oldest_message_age_seconds")
        .with_unit("s")
        .with_description("Age of the oldest message in the host's queue; 0 when empty (embedded host)")
        .with_callback(|observer| {
            with_snapshot(|s| {
                // Wall clock on both ends: the queue stamps messages with the wall clock too.
                let Some(queue) = &s.queue else { return };
                let age = queue.oldest_enqueued_at.map_or(0.0, |at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0);
                observer.observe(age, &[]);
            })
        })
        .build();
    meter
        .u64_observable_gauge("milink_dead_letters_stored")
        .with_description("Dead letters kept by the host (embedded host)")
        .with_callback(|observer| with_snapshot(|s| s.queue.iter().for_each(|q| observer.observe(q.dead_letters, &[]))))
        .build();
}
