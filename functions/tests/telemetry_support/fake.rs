//! FAKE engine for the in-process counters test (the test is about the runtime's bookkeeping, not an
//! engine): create_link fails transiently while `broken`, everything else succeeds at once.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use milink_core::assessment::{Assessment, Finding};
use milink_core::config::Endpoint;
use milink_core::error::EngineError;
use milink_core::migration::{LinkPhase, Observation, Position, Verification};
use milink_core::ports::{Engine, LinkPlan, Positions};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Default)]
pub struct FakeEngine {
    pub broken: AtomicBool,
}

#[async_trait]
impl Engine for FakeEngine {
    fn name(&self) -> &'static str {
        "fake"
    }
    async fn assess(&self, _: &Endpoint) -> Result<Assessment, EngineError> {
        unreachable!("not used")
    }
    async fn validate(&self, _: &LinkPlan) -> Result<Vec<Finding>, EngineError> {
        Ok(vec![])
    }
    async fn create_link(&self, _: &LinkPlan) -> Result<(), EngineError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(EngineError::transient("unreachable", "cannot reach fake-target:5432", "start the target"));
        }
        Ok(())
    }
    async fn observe(&self, _: &LinkPlan, now: DateTime<Utc>) -> Result<Observation, EngineError> {
        Ok(Observation {
            at: now,
            phase: LinkPhase::Streaming,
            progress_percent: 100.0,
            lag_bytes: Some(0),
            lag_seconds: Some(0.0),
            progress_marker: Some(Position(1)),
            problem: None,
            drift: Vec::new(),
            seed: None,
        })
    }
    async fn fence(&self, _: &LinkPlan) -> Result<Position, EngineError> {
        Ok(Position(1))
    }
    async fn unfence(&self, _: &LinkPlan) -> Result<(), EngineError> {
        Ok(())
    }
    async fn positions(&self, _: &LinkPlan) -> Result<Positions, EngineError> {
        Ok(Positions { source: Position(1), target: Position(1) })
    }
    async fn finalize(&self, _: &LinkPlan) -> Result<Verification, EngineError> {
        Ok(Verification::default())
    }
    async fn switch(&self, _: &LinkPlan, _: bool) -> Result<(), EngineError> {
        Ok(())
    }
    async fn drop_link(&self, _: &LinkPlan, _: bool) -> Result<(), EngineError> {
        Ok(())
    }
}
