//! milink-sqlserver: the SQL Server 2016–2025 → Azure SQL Managed Instance engine (the MI link).
//!
//! The link is a distributed availability group: on SQL Server a one-database AG plus a distributed AG made
//! with T-SQL over TDS (tiberius); on the managed instance a `distributedAvailabilityGroups` resource made
//! over ARM REST. No SQL Server and no Azure is reachable where this is built, so the crate is shaped to be
//! proven without them: every rule, every T-SQL statement, every ARM body and every status mapping is a pure
//! function over plain data (`rules`, `tsql`, `arm::models`, `observe`, `sizing`, `drain`), checked by tests
//! against Microsoft's contracts; the I/O is two thin adapters behind narrow ports (`tds::SqlSession`,
//! `arm::ManagedInstanceApi`); and the engine (`engine::SqlServerEngine`) only composes them. The
//! orchestration of each stage (`link`, `cutover`, `validate`, `network`) checks what exists before it acts.
#![warn(missing_docs)]

pub mod arm;
pub mod collector;
pub mod connections;
pub mod cutover;
pub mod drain;
pub mod engine;
pub mod errors;
pub mod inventory;
pub mod link;
pub mod lsn;
pub mod names;
pub mod network;
pub mod observe;
pub mod options;
pub mod plan;
pub mod roots;
pub mod rules;
pub mod sizing;
pub mod tds;
pub mod tsql;
pub mod validate;
pub mod versions;

pub use engine::SqlServerEngine;
