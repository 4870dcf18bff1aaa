//! `ScriptedEngine`: a test double of an engine (named as such), for what real servers cannot show quickly
//! or at all: steps that fail on purpose, and ten thousand links observed per tick. Every link is a healthy
//! streaming link unless told otherwise; each call may wait a configurable latency, standing in for the
//! round trip to a server.
#![allow(dead_code, unreachable_pub)]
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use milink_core::assessment::{Assessment, DatabaseAssessment, Finding, Readiness};
use milink_core::config::Endpoint;
use milink_core::error::EngineError;
use milink_core::migration::{LinkPhase, Observation, Position, TableCount, Verification};
use milink_core::ports::{Engine, LinkPlan, Positions};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The double.
#[derive(Debug, Default)]
pub struct ScriptedEngine {
    /// Each call waits this long first.
    pub latency: Duration,
    /// `create_link` fails transiently this many times, then succeeds (`u32::MAX`: always fails).
    pub create_link_failures: AtomicU32,
    /// Calls to `observe`.
    pub observations: AtomicU64,
}

impl ScriptedEngine {
    pub fn with_latency(latency: Duration) -> Self {
        Self { latency, ..Self::default() }
    }

    pub fn failing_create_link(times: u32) -> Self {
        Self { create_link_failures: AtomicU32::new(times), ..Self::default() }
    }

    async fn wait(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[async_trait]
impl Engine for ScriptedEngine {
    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn assess(&self, _: &Endpoint) -> Result<Assessment, EngineError> {
        self.wait().await;
        Ok(Assessment {
            server_version: "scripted 1".into(),
            instance_findings: vec![],
            databases: vec![
                DatabaseAssessment { name: "ToyStore".into(), readiness: Readiness::Ready, findings: vec![], size_bytes: Some(1 << 20) },
                DatabaseAssessment {
                    name: "Customer360".into(),
                    readiness: Readiness::Ready,
                    findings: vec![Finding::new("no_primary_key", milink_core::Severity::Blocker, "events has no key", "add a primary key")],
                    size_bytes: Some(1 << 20),
                },
            ],
            recommendation: None,
            connection_summary: None,
        })
    }

    async fn validate(&self, _: &LinkPlan) -> Result<Vec<Finding>, EngineError> {
        self.wait().await;
        Ok(vec![])
    }

    async fn create_link(&self, _: &LinkPlan) -> Result<(), EngineError> {
        self.wait().await;
        let left = self.create_link_failures.load(Ordering::SeqCst);
        if left > 0 {
            if left != u32::MAX {
                self.create_link_failures.fetch_sub(1, Ordering::SeqCst);
            }
            return Err(EngineError::transient("unreachable", "the target did not answer (scripted)", "wait; milink retries"));
        }
        Ok(())
    }

    async fn observe(&self, _: &LinkPlan, now: DateTime<Utc>) -> Result<Observation, EngineError> {
        self.wait().await;
        let n = self.observations.fetch_add(1, Ordering::Relaxed);
        Ok(Observation {
            at: now,
            phase: LinkPhase::Streaming,
            progress_percent: 100.0,
            lag_bytes: Some(0),
            lag_seconds: Some(0.0),
            progress_marker: Some(Position(n)),
            problem: None,
            drift: Vec::new(),
            seed: None,
        })
    }

    async fn fence(&self, _: &LinkPlan) -> Result<Position, EngineError> {
        self.wait().await;
        Ok(Position(1_000))
    }

    async fn unfence(&self, _: &LinkPlan) -> Result<(), EngineError> {
        Ok(())
    }

    async fn positions(&self, _: &LinkPlan) -> Result<Positions, EngineError> {
        self.wait().await;
        Ok(Positions { source: Position(1_000), target: Position(1_000) })
    }

    async fn finalize(&self, _: &LinkPlan) -> Result<Verification, EngineError> {
        self.wait().await;
        Ok(Verification { tables: vec![TableCount::counted("public.orders", 3, 3)], sequences_set: 1, complete: true, ..Verification::default() })
    }

    async fn switch(&self, _: &LinkPlan, _: bool) -> Result<(), EngineError> {
        self.wait().await;
        Ok(())
    }

    async fn drop_link(&self, _: &LinkPlan, _: bool) -> Result<(), EngineError> {
        Ok(())
    }
}
