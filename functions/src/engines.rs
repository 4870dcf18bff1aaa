//! Which engine serves which pair of connections, and how a migration becomes a [`LinkPlan`].
use milink_core::config::{Config, Endpoint, LookupError};
use milink_core::migration::Migration;
use milink_core::names::ConnectionName;
use milink_core::ports::{Engine, LinkPlan};
use std::collections::HashMap;
use std::sync::Arc;

/// The engines this build has, by the source connection's `engine` value.
#[derive(Clone)]
pub struct Engines {
    by_source_kind: HashMap<&'static str, (Arc<dyn Engine>, &'static str)>,
}

impl Default for Engines {
    fn default() -> Self {
        let mut engines = Self { by_source_kind: HashMap::new() };
        engines.register("postgres", "postgres", Arc::new(milink_postgres::PostgresEngine::new()));
        engines.register("sqlserver", "azure-sql-mi", Arc::new(milink_sqlserver::SqlServerEngine::new()));
        engines
    }
}

impl Engines {
    /// No engines (tests register their own).
    pub fn empty() -> Self {
        Self { by_source_kind: HashMap::new() }
    }

    /// Registers `engine` for sources of kind `source_kind` going to targets of kind `target_kind`.
    pub fn register(&mut self, source_kind: &'static str, target_kind: &'static str, engine: Arc<dyn Engine>) {
        self.by_source_kind.insert(source_kind, (engine, target_kind));
    }

    /// The engine for a source endpoint (assessment).
    pub fn for_source(&self, source: &Endpoint) -> Result<Arc<dyn Engine>, LookupError> {
        self.lookup(source).map(|(engine, _)| engine.clone())
    }

    /// The engine that reaches a connection, source or target (the connection test).
    pub fn for_connection(&self, endpoint: &Endpoint) -> Result<Arc<dyn Engine>, LookupError> {
        if let Some((engine, _)) = self.by_source_kind.get(endpoint.engine.as_str()) {
            return Ok(engine.clone());
        }
        let by_target = self.by_source_kind.values().find(|(_, target_kind)| *target_kind == endpoint.engine);
        by_target.map(|(engine, _)| engine.clone()).ok_or_else(|| LookupError::UnsupportedEngine {
            connection: endpoint.name.to_string(),
            engine: endpoint.engine.clone(),
            known: self.known(),
        })
    }

    /// The engine for a source → target pair, refusing pairs no engine supports.
    pub fn for_pair(&self, source: &Endpoint, target: &Endpoint) -> Result<Arc<dyn Engine>, LookupError> {
        let (engine, target_kind) = self.lookup(source)?;
        if target.engine != *target_kind {
            return Err(LookupError::UnsupportedPair {
                source_engine: source.engine.clone(),
                expected: (*target_kind).to_owned(),
                target: target.name.to_string(),
                target_engine: target.engine.clone(),
            });
        }
        Ok(engine.clone())
    }

    fn lookup(&self, source: &Endpoint) -> Result<&(Arc<dyn Engine>, &'static str), LookupError> {
        self.by_source_kind.get(source.engine.as_str()).ok_or_else(|| LookupError::UnsupportedEngine {
            connection: source.name.to_string(),
            engine: source.engine.clone(),
            known: self.known(),
        })
    }

    fn known(&self) -> String {
        let mut kinds: Vec<_> = self.by_source_kind.keys().copied().collect();
        kinds.sort_unstable();
        kinds.join(", ")
    }
}

/// Builds the plan for a migration from the config (secrets stay in memory).
pub fn plan(config: &Config, migration: &Migration) -> Result<LinkPlan, LookupError> {
    let endpoint = |name: &ConnectionName| config.endpoint(name).cloned();
    Ok(LinkPlan {
        migration_id: migration.id.clone(),
        source: endpoint(&migration.source)?,
        target: endpoint(&migration.target)?,
        database: migration.database.clone(),
        settings: migration.settings.clone(),
    })
}
