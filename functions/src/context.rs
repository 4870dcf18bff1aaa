//! What every handler and route gets: config, stores, engines, clock, notifier.
use crate::engines::Engines;
use milink_core::config::Config;
use milink_core::ports::{AssessmentStore, Clock, MigrationStore};
use std::sync::Arc;

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct Context {
    /// The loaded config (secrets in memory only).
    pub config: Arc<Config>,
    /// Migration state and outbox.
    pub migrations: Arc<dyn MigrationStore>,
    /// Assessment reports.
    pub assessments: Arc<dyn AssessmentStore>,
    /// Engines by connection kind.
    pub engines: Engines,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// HTTP client for webhooks.
    pub http: reqwest::Client,
}

impl Context {
    /// A context over one store that serves both ports (SQLite, Table Storage).
    pub fn new<S>(config: Config, store: Arc<S>, engines: Engines, clock: Arc<dyn Clock>) -> Self
    where
        S: MigrationStore + AssessmentStore + 'static,
    {
        Self {
            config: Arc::new(config),
            migrations: store.clone(),
            assessments: store,
            engines,
            clock,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("a default reqwest client builds"),
        }
    }
}
