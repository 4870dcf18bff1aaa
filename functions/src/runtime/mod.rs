//! The runtime: what surrounds the stage handlers, written once for both hosts.
//!
//! - [`settle`]: the pure rule for a delivery's outcome (done, retry at a time with backoff, give up).
//! - [`deliver`]: one delivery end to end (handler, settle, tell the flow, dead-letter) over a host's
//!   [`Transport`] — the SQLite queue's rows, or Service Bus scheduled sends and a dead-letter table.
//! - [`admission`]: which queued migrations start now, from the servers' capacity and the user's caps.
//! - [`alerts`]: stalled links, growing lag, retained WAL, logged and sent to a webhook once per condition.
//! - [`poll`]: one tick of the sync timer — observe every syncing link with per-source, total and
//!   time-budget limits, nudge stalled steps, and run the watchdog that re-sends a lost step or enforces
//!   a drain deadline whose message never came back.
//!
//! The hosts keep only what is theirs: the embedded host's dispatcher loop and tokio timers, the Azure
//! host's Functions payloads and Service Bus REST. One step at a time per migration holds in both by the
//! queue itself (SQLite: one leased message per ordering key; Service Bus: one session queue for every
//! step, session = migration), see [`milink_core::message::Stage`].
pub mod admission;
pub mod alerts;
pub mod deliver;
pub mod poll;
pub mod settle;

pub use deliver::{deliver, Delivered, Transport, TransportError};
pub use poll::{PollSettings, PollTick};
pub use settle::{RetryPolicy, Settlement};
