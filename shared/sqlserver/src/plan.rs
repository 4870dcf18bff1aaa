//! One link, resolved: its names, its database, both sides' ports and the migration's settings.
//!
//! Built from the core's `LinkPlan` every time a stage runs (never stored, since the endpoints carry secrets),
//! so each stage starts from the config and the servers, not from remembered state. Names are validated here
//! once ([`LinkNames`]), before any of them reaches T-SQL or a URL.
use crate::connections::{Connections, Source, Target};
use crate::errors;
use crate::names::{check_certificate_resource_name, check_sysname, LinkNames};
use milink_core::error::EngineError;
use milink_core::migration::Settings;
use milink_core::ports::LinkPlan;

/// A resolved link.
#[derive(Clone)]
pub struct Link {
    /// Object names.
    pub names: LinkNames,
    /// The database (same name on both sides).
    pub database: String,
    /// SQL Server.
    pub source: Source,
    /// The managed instance.
    pub target: Target,
    /// The migration's settings.
    pub settings: Settings,
}

impl Link {
    /// Resolves a plan through `connections`.
    pub fn resolve(plan: &LinkPlan, connections: &dyn Connections) -> Result<Self, EngineError> {
        if plan.source.engine != "sqlserver" || plan.target.engine != "azure-sql-mi" {
            return Err(errors::config(
                "wrong_engine",
                format!("the sqlserver engine links engine = \"sqlserver\" to engine = \"azure-sql-mi\", not {} to {}", plan.source.engine, plan.target.engine),
                "check the engine of both connections",
            ));
        }
        let source = connections.source(&plan.source)?;
        let target = connections.target(&plan.target)?;
        let invalid = |e: crate::names::InvalidName| errors::config("invalid_name", e.to_string(), "change the name in the target connection's [options]");
        let options = &target.options;
        let names = LinkNames::new(&plan.link_name(), options.link_name.as_deref(), options.availability_group.as_deref(), options.instance_availability_group.as_deref())
            .map_err(invalid)?;
        check_sysname("database name", plan.database.as_str()).map_err(invalid)?;
        check_sysname("endpoint certificate name", &source.options.endpoint_certificate).map_err(invalid)?;
        check_sysname("endpoint name", &source.options.endpoint_name).map_err(invalid)?;
        if let Some(name) = &options.trust_certificate_name {
            check_certificate_resource_name(name).map_err(invalid)?;
        }
        for login in &plan.settings.fence_roles {
            check_sysname("login to fence", login).map_err(invalid)?;
        }
        Ok(Self { names, database: plan.database.as_str().to_owned(), source, target, settings: plan.settings.clone() })
    }

    /// The name of SQL Server's certificate on the MI: configured, or `<server>_<certificate>` reduced to
    /// the characters ARM accepts (so two SQL Servers with the same certificate name do not collide).
    pub fn trust_certificate_name(&self, server_name: &str, certificate: &str) -> String {
        if let Some(name) = &self.target.options.trust_certificate_name {
            return name.clone();
        }
        let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect::<String>();
        let mut name = format!("{}_{}", clean(server_name), clean(certificate));
        name.truncate(128);
        name
    }
}
