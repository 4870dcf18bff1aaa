//! `SqlServerEngine`: the core's `Engine` for SQL Server → Azure SQL Managed Instance, composed of the parts.
//!
//! Each method resolves the plan ([`Link`]), opens one SQL Server session, and hands both to the stage
//! module that owns the logic (`collector` + `rules` + `sizing`, `validate`, `link`, `observe`, `cutover`).
//! Nothing here decides anything a test would want to check; it wires. Time, waiting and connections are
//! injected ([`SqlServerEngine::with_parts`]) so the whole engine runs in tests against a scripted SQL Server
//! and the ARM contract server; [`SqlServerEngine::new`] wires the real ones and does no I/O.
use crate::collector::{self, Pause, TokioPause};
use crate::connections::{Connections, EnvLookup, LiveConnections};
use crate::cutover;
use crate::link::{self, CancelReport};
use crate::observe;
use crate::options::SourceOptions;
use crate::plan::Link;
use crate::rules::{self, TargetFacts};
use crate::sizing::{self, PriceList, SizingOptions};
use crate::tds::SqlSession;
use crate::validate;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use milink_core::assessment::{Assessment, Finding, Severity};
use milink_core::config::{Endpoint, Secret};
use milink_core::error::EngineError;
use milink_core::migration::{Observation, Position, Verification};
use milink_core::ports::{Clock, Engine, LinkPlan, Positions, SystemClock};
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;

/// The SQL Server → Azure SQL Managed Instance engine (`name() == "sqlserver"`).
pub struct SqlServerEngine {
    connections: Arc<dyn Connections>,
    clock: Arc<dyn Clock>,
    pause: Arc<dyn Pause>,
    env: EnvLookup,
}

impl Default for SqlServerEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl SqlServerEngine {
    /// The engine with real connections (tiberius, ARM with `azure_identity`), the system clock and real
    /// waiting. Does no I/O.
    pub fn new() -> Self {
        let env: EnvLookup = Arc::new(|name: &str| std::env::var(name).ok());
        Self { connections: Arc::new(LiveConnections::new(env.clone())), clock: Arc::new(SystemClock), pause: Arc::new(TokioPause), env }
    }

    /// The engine with injected parts (tests).
    pub fn with_parts(connections: Arc<dyn Connections>, clock: Arc<dyn Clock>, pause: Arc<dyn Pause>, env: EnvLookup) -> Self {
        Self { connections, clock, pause, env }
    }

    fn link(&self, plan: &LinkPlan) -> Result<Link, EngineError> {
        Link::resolve(plan, self.connections.as_ref())
    }

    async fn session(link: &Link) -> Result<Box<dyn SqlSession>, EngineError> {
        link.source.connector.connect().await
    }

    fn master_key_password(&self, options: &SourceOptions) -> Result<Secret, EngineError> {
        if let Some((var, value)) = options.master_key_password_env.as_deref().and_then(|var| (self.env)(var).map(|value| (var, value))) {
            let password = Secret::new(value);
            return match crate::tsql::link::master_key_password_problem(&password) {
                None => Ok(password),
                Some(problem) => Err(crate::errors::config(
                    "master_key_password_invalid",
                    format!("{problem} (from {var})"),
                    format!("set {var} to a password of 1 to 128 characters that meets the Windows password policy, or remove master_key_password_env so milink generates one"),
                )),
            };
        }
        // Random; SQL Server also protects the key with the service master key, so nobody needs it later.
        let random: String = rand::thread_rng().sample_iter(&Alphanumeric).take(40).map(char::from).collect();
        Ok(Secret::new(format!("{random}aA1")))
    }

    fn prices(options: &SourceOptions) -> Result<PriceList, EngineError> {
        match &options.price_file {
            None => Ok(PriceList::shipped()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| crate::errors::config("price_file", format!("cannot read price_file {}: {e}", path.display()), "fix options.price_file"))?;
                PriceList::parse(&text).map_err(|e| crate::errors::config("price_file", e, "fix the price file (see data/prices.toml for the format)"))
            }
        }
    }

    /// Failback over a kept reverse link: planned failover from the MI side, then the fenced logins are
    /// enabled on SQL Server again. Not part of the core contract yet (see the engine's report).
    pub async fn failback(&self, plan: &LinkPlan) -> Result<(), EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        cutover::failback_to_sql_server(&link, session.as_mut()).await
    }

    /// Cancel with its report: what was removed and what was left (and why).
    pub async fn cancel(&self, plan: &LinkPlan, drop_target: bool) -> Result<CancelReport, EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        link::cancel(&link, session.as_mut(), drop_target).await
    }

    /// Assessment of an already collected inventory (the pure part of [`Engine::assess`]).
    pub fn assess_inventory(inventory: &crate::inventory::Inventory, options: &SourceOptions, prices: &PriceList) -> Assessment {
        let mut assessment = rules::evaluate(inventory, &TargetFacts::default());
        let sizing = SizingOptions { percentile: options.sizing_percentile, scaling_factor: options.sizing_scaling_factor, license: options.license };
        match sizing::recommend(inventory, &sizing, prices) {
            Ok(recommendation) => assessment.recommendation = Some(recommendation),
            Err(reason) => assessment.instance_findings.push(Finding::new("no_size_fits", Severity::Warning, reason, "split the databases over several managed instances, or check the workload samples")),
        }
        assessment
    }
}

#[async_trait]
impl Engine for SqlServerEngine {
    fn name(&self) -> &'static str {
        "sqlserver"
    }

    async fn failback(&self, plan: &LinkPlan) -> Result<Vec<milink_core::migration::StepDuration>, EngineError> {
        // One role switch on the instance: no steps to tell apart.
        SqlServerEngine::failback(self, plan).await.map(|()| Vec::new())
    }

    /// Azure Arc's documented limit: 10 migrations at once per SQL Server instance. milink cannot read
    /// what other tools use there, so the pool counts milink's own links only; the `[admission]` caps
    /// apply on top (per target: a managed instance).
    async fn capacity(
        &self,
        _server: &Endpoint,
        role: milink_core::admission::Role,
    ) -> Result<Option<milink_core::admission::Capacity>, EngineError> {
        if role != milink_core::admission::Role::Source {
            return Ok(None);
        }
        let pool = milink_core::admission::Pool {
            what: "MI link migration slot".into(),
            setting: "the Azure Arc limit of 10 migrations per SQL Server instance".into(),
            total: 10,
            in_use: 0,
            by_link: Default::default(),
            seeding_need: 1,
            streaming_need: 1,
        };
        Ok(Some(milink_core::admission::Capacity { pools: vec![pool] }))
    }

    /// mi-link.md §3.3: the hardened LSNs must match and stay unchanged for a while before failover.
    fn min_drain_stable_seconds(&self) -> u64 {
        10
    }

    async fn assess(&self, source: &Endpoint) -> Result<Assessment, EngineError> {
        let source = self.connections.source(source)?;
        let prices = Self::prices(&source.options)?;
        let mut session = source.connector.connect().await?;
        let inventory = collector::collect(session.as_mut(), self.pause.as_ref(), Duration::from_secs(source.options.sample_seconds)).await?;
        let mut assessment = Self::assess_inventory(&inventory, &source.options, &prices);
        // Who is connected is for the DBA's cutover plan, not for readiness: a refusal costs the summary only.
        match collector::connection_summary(session.as_mut()).await {
            Ok(summary) => assessment.connection_summary = Some(summary),
            Err(error) => assessment.instance_findings.push(Finding::new(
                "connection_summary_unavailable",
                Severity::Info,
                format!("milink could not list who is connected: {}", error.message),
                "grant milink's login VIEW SERVER STATE, then assess again",
            )),
        }
        Ok(assessment)
    }

    /// SQL Server sources only: the managed instance's side is reached through ARM, which the migration's
    /// validation step exercises.
    async fn test_connection(&self, endpoint: &Endpoint) -> Result<milink_core::ports::ConnectionCheck, EngineError> {
        if endpoint.engine != "sqlserver" {
            return Err(EngineError::definite(
                "test_connection_not_supported",
                format!("connection '{}' is a managed instance, reached through Azure Resource Manager; milink tests it when the migration is validated", endpoint.name),
                "start the migration: its validation step checks the instance, the link's network path and the credentials",
            ));
        }
        let source = self.connections.source(endpoint)?;
        let started = std::time::Instant::now();
        let mut session = source.connector.connect().await?;
        let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
        let asked = std::time::Instant::now();
        let (server_version, tls) = collector::connection_test(session.as_mut()).await?;
        Ok(milink_core::ports::ConnectionCheck { server_version, tls, tls_protocol: None, connect_ms, round_trip_ms: asked.elapsed().as_secs_f64() * 1000.0 })
    }

    async fn validate(&self, plan: &LinkPlan) -> Result<Vec<Finding>, EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        let mut extra = Vec::new();
        let instance_session = match &link.target.sql {
            None => None,
            Some(connector) => match connector.connect().await {
                Ok(session) => Some(session),
                Err(error) => {
                    extra.push(Finding::new("mi_tds_unreachable", Severity::Warning, format!("the managed instance's tds_endpoint could not be reached: {}", error.message), error.remediation));
                    None
                }
            },
        };
        let password = || self.master_key_password(&link.source.options);
        let mut findings = validate::validate(&link, session.as_mut(), instance_session, self.pause.as_ref(), self.clock.now(), &password).await?;
        if let Err(error) = self.master_key_password(&link.source.options) {
            findings.push(Finding::new("master_key_password_invalid", Severity::Blocker, error.message, error.remediation));
        }
        findings.extend(extra);
        Ok(findings)
    }

    async fn create_link(&self, plan: &LinkPlan) -> Result<(), EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        let password = || self.master_key_password(&link.source.options);
        let steps = link::create(&link, session.as_mut(), self.clock.now(), &password).await?;
        for step in steps {
            tracing::info!(migration = %plan.migration_id, step = step.step, acted = step.acted, "create-link step");
        }
        Ok(())
    }

    async fn observe(&self, plan: &LinkPlan, now: DateTime<Utc>) -> Result<Observation, EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        let view = cutover::link_view(session.as_mut(), &link.names).await?;
        let dag = link.target.api.link(&link.names.distributed_ag).await?;
        Ok(observe::observe(&view, dag.as_ref(), now))
    }

    async fn fence(&self, plan: &LinkPlan) -> Result<Position, EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        cutover::fence(&link, session.as_mut()).await
    }

    async fn unfence(&self, plan: &LinkPlan) -> Result<(), EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        cutover::unfence(&link, session.as_mut()).await
    }

    async fn positions(&self, plan: &LinkPlan) -> Result<Positions, EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        cutover::positions(&link, session.as_mut()).await
    }

    async fn finalize(&self, plan: &LinkPlan) -> Result<Verification, EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        let mut instance_session = match &link.target.sql {
            Some(connector) => Some(connector.connect().await?),
            None => None,
        };
        cutover::finalize(&link, session.as_mut(), instance_session.as_mut().map(|s| &mut **s as &mut dyn SqlSession), self.pause.as_ref()).await
    }

    async fn switch(&self, plan: &LinkPlan, keep_reverse_link: bool) -> Result<(), EngineError> {
        let link = self.link(plan)?;
        let mut session = Self::session(&link).await?;
        cutover::switch(&link, session.as_mut(), keep_reverse_link, self.clock.as_ref(), self.pause.as_ref()).await
    }

    async fn drop_link(&self, plan: &LinkPlan, drop_target: bool) -> Result<(), EngineError> {
        let report = self.cancel(plan, drop_target).await?;
        for left in &report.left {
            tracing::info!(migration = %plan.migration_id, left = %left, "cancel left in place");
        }
        Ok(())
    }
}
