//! The Function App's functions: one list that the router dispatches on and that `function.json` files
//! are rendered from, so a folder and its handler cannot disagree (a test compares the committed files with
//! [`function_json`]).
//!
//! - HTTP triggers: one per route of the API, with the route the embedded host serves under `/api` (the
//!   host's `routePrefix`). The handler rebuilds the request and runs it through the same router
//!   ([`crate::api::app`]), so bodies and errors are the embedded host's, byte for byte. The web UI is one
//!   more HTTP function (`Ui`, `/api/ui/...`) answered by the same router ([`crate::ui`]).
//! - Service Bus queue triggers: one per [`Stage`], sessions on. Every step of a migration is on the one
//!   `migration` queue with the migration id as session, so Service Bus gives a migration's steps to one
//!   invocation at a time, in order (a Cancel never runs beside CreateLink or Fence).
//! - Timer triggers: sync polling (every 30 s) and the outbox relay (every minute).
use milink_core::message::Stage;
use serde_json::{json, Value};

/// The app setting that names the Service Bus connection (`ServiceBusConnection__fullyQualifiedNamespace`
/// with a managed identity).
pub const SERVICE_BUS_CONNECTION: &str = "ServiceBusConnection";
/// Queue names are this prefix plus the stage; the sender uses the same prefix by default.
pub const QUEUE_PREFIX: &str = "milink-";

/// What triggers a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An HTTP route (under `/api`).
    Http {
        /// Route template as Functions writes it (`migrations/{id}`).
        route: &'static str,
        /// Methods, lower case.
        methods: &'static [&'static str],
        /// `anonymous` or `function`.
        auth_level: &'static str,
    },
    /// A stage queue.
    Queue {
        /// The stage (the envelope's `stage`).
        stage: Stage,
    },
    /// A timer.
    Timer {
        /// NCRONTAB, six fields.
        schedule: &'static str,
        /// Which timer.
        job: TimerJob,
    },
}

/// The timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerJob {
    /// Observe every syncing link; nudge stalled steps.
    PollSync,
    /// Send what the outbox still holds.
    Relay,
}

/// One function: its folder name and trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// Folder name = function name = the path the host POSTs to.
    pub name: &'static str,
    /// Its trigger.
    pub trigger: Trigger,
}

const fn http(name: &'static str, route: &'static str, methods: &'static [&'static str]) -> Function {
    Function { name, trigger: Trigger::Http { route, methods, auth_level: "function" } }
}

const fn queue(stage: Stage) -> Function {
    Function { name: stage.function_name(), trigger: Trigger::Queue { stage } }
}

/// Every function of the app.
pub const FUNCTIONS: &[Function] = &[
    Function { name: "Health", trigger: Trigger::Http { route: "health", methods: &["get"], auth_level: "anonymous" } },
    http("OpenApi", "openapi.json", &["get"]),
    http("Assessments", "assessments", &["post"]),
    http("Assessment", "assessments/{id}", &["get"]),
    http("Migrations", "migrations", &["get", "post"]),
    http("Migration", "migrations/{id}", &["get"]),
    http("MigrationCutover", "migrations/{id}/cutover", &["post"]),
    http("MigrationCancel", "migrations/{id}/cancel", &["post"]),
    http("MigrationFailback", "migrations/{id}/failback", &["post"]),
    http("MigrationDropReverseLink", "migrations/{id}/drop-reverse-link", &["post"]),
    http("DeadLetters", "deadletters", &["get"]),
    http("BatchCutover", "batch/cutover", &["post"]),
    http("BatchCancel", "batch/cancel", &["post"]),
    http("Fleets", "fleets", &["get", "post"]),
    http("Fleet", "fleets/{name}", &["get"]),
    http("FleetApprove", "fleets/{name}/approve", &["post"]),
    http("FleetCutover", "fleets/{name}/cutover", &["post"]),
    http("FleetCancel", "fleets/{name}/cancel", &["post"]),
    http("MigrationVerify", "migrations/{id}/verify", &["post"]),
    http("Overview", "overview", &["get"]),
    http("Connections", "connections", &["get"]),
    http("ConnectionTest", "connections/{name}/test", &["post"]),
    // The web UI's files (crate::ui), at /api/ui/. Anonymous: they hold no secret, and a browser cannot add
    // a function key to a page navigation; every API call the pages make still needs the key.
    Function { name: "Ui", trigger: Trigger::Http { route: "ui/{*path}", methods: &["get"], auth_level: "anonymous" } },
    queue(Stage::Assess),
    queue(Stage::Migration),
    queue(Stage::Notify),
    Function { name: "PollSync", trigger: Trigger::Timer { schedule: "*/30 * * * * *", job: TimerJob::PollSync } },
    Function { name: "Relay", trigger: Trigger::Timer { schedule: "0 * * * * *", job: TimerJob::Relay } },
];

/// The function named `name` (exact, as the host calls it).
pub fn find(name: &str) -> Option<&'static Function> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// The binding name of every trigger (`Data.<name>`).
pub fn binding_name(trigger: &Trigger) -> &'static str {
    match trigger {
        Trigger::Http { .. } => "req",
        Trigger::Queue { .. } => "message",
        Trigger::Timer { .. } => "timer",
    }
}

/// The function's `function.json`.
pub fn function_json(function: &Function) -> Value {
    let name = binding_name(&function.trigger);
    let bindings = match function.trigger {
        Trigger::Http { route, methods, auth_level } => json!([
            { "name": name, "type": "httpTrigger", "direction": "in", "authLevel": auth_level, "methods": methods, "route": route },
            { "name": "res", "type": "http", "direction": "out" }
        ]),
        Trigger::Queue { stage } => json!([{
            "name": name, "type": "serviceBusTrigger", "direction": "in",
            "queueName": format!("{QUEUE_PREFIX}{}", stage.as_str()), "connection": SERVICE_BUS_CONNECTION,
            "isSessionsEnabled": true
        }]),
        Trigger::Timer { schedule, job } => json!([{
            "name": name, "type": "timerTrigger", "direction": "in", "schedule": schedule,
            "runOnStartup": false,
            // Schedule monitoring records past occurrences in storage; worth it for the minute-level relay,
            // not for a 30-second poll that runs again before a missed run would matter.
            "useMonitor": job == TimerJob::Relay
        }]),
    };
    json!({ "bindings": bindings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_has_exactly_one_queue_function_named_by_the_stage() {
        let queues: Vec<Stage> = FUNCTIONS
            .iter()
            .filter_map(|f| match f.trigger {
                Trigger::Queue { stage } => Some(stage),
                _ => None,
            })
            .collect();
        assert_eq!(queues, Stage::ALL.to_vec(), "one queue function per stage, in the Stage list's order");
        for stage in Stage::ALL {
            assert_eq!(find(stage.function_name()).map(|f| f.trigger), Some(Trigger::Queue { stage }));
        }
    }

    #[test]
    fn every_step_of_a_migration_shares_one_session_queue() {
        use milink_core::flow::Command;
        use milink_core::migration::Position;
        let steps = [
            Command::Validate,
            Command::CreateLink,
            Command::Fence { attempt: 1 },
            Command::Drain { attempt: 1, position: Position(0), deadline: chrono::Utc::now() },
            Command::Finalize { attempt: 1 },
            Command::Switch { attempt: 1, keep_reverse_link: false },
            Command::Unfence { attempt: 1 },
            Command::Failback,
            Command::DropReverseLink,
            Command::Verify { request: 1 },
            Command::DropLink { unfence: false, drop_target: false },
        ];
        for command in steps {
            assert_eq!(command.stage(), Stage::Migration, "{} must run one at a time with the other steps", command.name());
        }
        assert_eq!(Command::Notify { status: String::new(), message: String::new() }.stage(), Stage::Notify);
    }
}
