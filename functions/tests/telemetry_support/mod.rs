//! Support for the telemetry tests: an OTLP/HTTP receiver in the test process (axum, protobuf decoded with
//! opentelemetry-proto), and the real `milink up` started with OTLP export pointed at it.
#![allow(dead_code, unreachable_pub)]
pub mod fake;
pub mod host;
pub mod receiver;
