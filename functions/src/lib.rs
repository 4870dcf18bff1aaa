//! milink's stage handlers, its HTTP API, and the embedded host that runs them.
//!
//! Each stage of the flow is one small handler (`handlers/*.rs`): load state, do the I/O the command
//! asks for through an [`Engine`](milink_core::ports::Engine), turn the result into an event, let
//! [`milink_core::flow::decide`] rule, save state and outbox together. Handlers know nothing of the host:
//! the embedded host (`embedded`: SQLite queue, tokio timers) and the Azure Functions adapter feed them
//! the same envelopes. The API (`api`) is built by one function, [`api::app`], used by every host and by
//! the tests without a socket.
#![warn(missing_docs)]

pub mod api;
pub mod azure;
pub mod context;
pub mod embedded;
pub mod engines;
pub mod handlers;
pub mod runtime;
pub mod telemetry;
pub mod ui;
