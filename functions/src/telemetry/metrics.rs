//! Metrics a fleet is watched by, through OpenTelemetry: exported over OTLP when an endpoint is set, and
//! rendered as Prometheus text at `/metrics` ([`scrape`]) either way. docs/observability.md lists them all.
//!
//! Two kinds, so nothing is counted twice:
//! - **Gauges derived from the store** when they are read ([`super::fleet`]): lag, seeding progress,
//!   verification, migrations by status, queue depth and age. The store already knows these; a second
//!   tally in memory would drift from it (and start from zero after every restart, or in every Functions
//!   instance).
//! - **Counters and histograms recorded where things happen**: deliveries and their outcomes, retries,
//!   dead letters and stalls in [`crate::runtime::deliver()`] and the handlers, cutover step durations and
//!   write downtime from the cutover record when a cutover step's answer is saved.
//!
//! Cardinality stays bounded: labels are `step`, `outcome`, `status`, and per migration `source`, `target`,
//! `database` (what a user filters a fleet by). The migration id is not a label: every migration ever run
//! would leave a series behind. It is on traces and log lines instead, and (source, target, database)
//! names at most one live migration (the store refuses a second). Per-migration gauges cover live
//! migrations only; finished ones count in `milink_migrations{status}`.
pub use super::prometheus::scrape;
pub(crate) use super::prometheus::scrape_reader;

use milink_core::flow::Command;
use milink_core::migration::Migration;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::KeyValue;
use std::sync::OnceLock;

/// Seconds; from a quick validate to a drain that waits out its deadline.
const STEP_BUCKETS: [f64; 13] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];
/// Seconds of write downtime; milink aims at a few seconds.
const DOWNTIME_BUCKETS: [f64; 11] = [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 300.0];

/// The instruments, made once the meter provider is installed (before that, recording does nothing).
struct Instruments {
    deliveries: Counter<u64>,
    delivery_seconds: Histogram<f64>,
    retries: Counter<u64>,
    dead_letters: Counter<u64>,
    stalls: Counter<u64>,
    cutover_step_seconds: Histogram<f64>,
    write_downtime_seconds: Histogram<f64>,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

/// Makes the instruments and the store-derived gauges on the global meter provider. `exporting`: an OTLP
/// exporter reads them periodically, so the sync timer keeps the store-derived gauges fresh.
pub(crate) fn install(exporting: bool) {
    let meter = opentelemetry::global::meter("milink");
    let counter = |name: &'static str, description: &'static str| meter.u64_counter(name).with_description(description).build();
    let histogram = |name: &'static str, description: &'static str, buckets: &[f64]| {
        meter.f64_histogram(name).with_unit("s").with_description(description).with_boundaries(buckets.to_vec()).build()
    };
    let _ = INSTRUMENTS.set(Instruments {
        deliveries: counter("milink_step_deliveries", "Step messages delivered, by step and outcome (done, retry, dead_letter)"),
        delivery_seconds: histogram("milink_step_duration_seconds", "Time a step's handler took, by step and outcome", &STEP_BUCKETS),
        retries: counter("milink_step_retries", "Deliveries that failed transiently and were scheduled again, by step"),
        dead_letters: counter("milink_dead_letters", "Messages that ran out of retries and became dead letters, by step"),
        stalls: counter("milink_stalls", "Steps that ran out of retries and left their migration Stalled, by step"),
        cutover_step_seconds: histogram(
            "milink_cutover_step_duration_seconds",
            "Each cutover step from its command to its answer (queue time included), by step",
            &STEP_BUCKETS,
        ),
        write_downtime_seconds: histogram(
            "milink_cutover_write_downtime_seconds",
            "Seconds the source refused writes before the target took them: fence to switch",
            &DOWNTIME_BUCKETS,
        ),
    });
    super::fleet::install(&meter, exporting);
}

/// How a delivery ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled.
    Done,
    /// Scheduled again.
    Retry,
    /// Given up.
    DeadLetter,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry => "retry",
            Outcome::DeadLetter => "dead_letter",
        }
    }
}

/// One delivery of `step` ended with `outcome` after `seconds` in its handler.
pub fn delivered(step: &'static str, outcome: Outcome, seconds: f64) {
    let Some(instruments) = INSTRUMENTS.get() else { return };
    let labels = [KeyValue::new("step", step), KeyValue::new("outcome", outcome.as_str())];
    instruments.deliveries.add(1, &labels);
    instruments.delivery_seconds.record(seconds, &labels);
    let step_only = &labels[..1];
    match outcome {
        Outcome::Done => {}
        Outcome::Retry => instruments.retries.add(1, step_only),
        Outcome::DeadLetter => instruments.dead_letters.add(1, step_only),
    }
}

/// A step ran out of retries and its migration is now Stalled.
pub fn stalled(step: &'static str) {
    if let Some(instruments) = INSTRUMENTS.get() {
        instruments.stalls.add(1, &[KeyValue::new("step", step)]);
    }
}

/// A cutover step's answer was saved: records the step durations the flow added to the cutover record
/// (`before` is the migration as loaded, `after` as saved), and the write downtime once switched.
pub fn cutover_recorded(before: &Migration, after: &Migration) {
    let Some(instruments) = INSTRUMENTS.get() else { return };
    let known = if before.cutover.attempt == after.cutover.attempt { before.cutover.steps.len() } else { 0 };
    for step in after.cutover.steps.iter().skip(known) {
        let name = format!("{:?}", step.step).to_ascii_lowercase();
        instruments.cutover_step_seconds.record(step.ms as f64 / 1000.0, &[KeyValue::new("step", name)]);
    }
    if before.cutover.switched_at.is_none() {
        if let Some(ms) = after.cutover.write_downtime_ms() {
            instruments.write_downtime_seconds.record(ms as f64 / 1000.0, &[]);
        }
    }
}

/// The `step` label of a message: the command's name, or the assessment stages.
pub fn step_label(payload: &milink_core::message::Payload) -> &'static str {
    use milink_core::message::Payload;
    match payload {
        Payload::Migration { command, .. } => command.name(),
        Payload::Assess { .. } => "assess",
        Payload::AssessmentCompleted { .. } => "notify",
    }
}

/// Cutover commands, whose answers add to the cutover record.
pub fn is_cutover_step(command: &Command) -> bool {
    matches!(
        command,
        Command::Fence { .. } | Command::Drain { .. } | Command::Finalize { .. } | Command::Switch { .. } | Command::Unfence { .. }
    )
}
