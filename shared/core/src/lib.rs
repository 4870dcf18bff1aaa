//! The engine-neutral core of milink.
//!
//! Everything here is pure or a trait: the domain types (connections, assessment reports, migrations,
//! observations), the flow itself as `flow::decide(state, event) -> (state, commands)`, the ports that hosts
//! and engines implement (`ports`), the message envelope, and configuration. No module here opens a socket or
//! a file other than `config`, which reads the config file and the secrets it names. Keeping the rules pure
//! means every rule of the migration flow can be tested exhaustively without a database.
#![warn(missing_docs)]

pub mod admission;
pub mod alerts;
pub mod assessment;
pub mod config;
pub mod drain;
pub mod error;
pub mod fleet;
pub mod flow;
pub mod message;
pub mod migration;
pub mod names;
pub mod ports;
pub mod verification;

pub use assessment::{AssessmentReport, Finding, Readiness, Severity};
pub use error::{EngineError, ErrorKind};
pub use flow::{decide, Command, Event, Rejection, Transition};
pub use migration::{CutoverStep, Migration, Observation, Phase, Status};
pub use names::{ConnectionName, DatabaseName, MigrationId};
