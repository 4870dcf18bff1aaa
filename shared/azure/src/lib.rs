//! milink on Azure: state in Table Storage, messages on Service Bus, and the auth both need.
//!
//! - [`store::TableStore`] implements the core's `MigrationStore` and `AssessmentStore` ports, like the
//!   SQLite store, with the outbox in the same entity-group batch as the state.
//! - [`servicebus::ServiceBusSender`] sends messages by REST, because the Functions output binding cannot
//!   set what the flow relies on: a deterministic `MessageId` (duplicate detection), `SessionId` = the
//!   migration (per-migration order) and a scheduled enqueue time (backoff).
//! - [`auth`] signs both: shared key / SAS for Azurite and development, Entra tokens (managed identity) in
//!   production.
//! - [`table`] is the thin Table Storage REST client under the store; its module doc says why it is not the
//!   `azure_data_tables` crate.
#![warn(missing_docs)]

pub mod auth;
pub mod servicebus;
pub mod store;
pub mod table;

pub use servicebus::{BusMessage, ServiceBusConfig, ServiceBusSender};
pub use store::{Publisher, TableStore, TableStoreConfig};
