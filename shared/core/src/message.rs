//! The message envelope that carries commands between stages, on any bus.
//!
//! Ids are deterministic (`<migration>:<command>:<version>`): re-deciding the same transition after a
//! crash produces the same ids, so the SQLite queue (`INSERT OR IGNORE`) and Service Bus duplicate detection
//! drop the repeat. Top-level field names are chosen so that none collides with Service Bus metadata
//! (`MessageId`, `SessionId`, `DeliveryCount`, ...): the Functions host copies a JSON body's top-level
//! properties into the trigger metadata and would overwrite those (see reference/functions-host.md §1.2).
use crate::flow::Command;
use crate::names::{ConnectionName, MigrationId};
use serde::{Deserialize, Serialize};

/// Where a message goes: the one list that names the queues, the handlers and the Functions folders.
///
/// Every command of a migration goes to one stage, [`Stage::Migration`], whatever step it is: the queue
/// is session-enabled with the migration id as the session, so Service Bus hands a migration's messages
/// to one handler at a time, in order, by construction (with one queue per step, a Cancel could run while
/// CreateLink or Fence was still running). Assessments and notifications have their own stages so that a
/// slow server or a webhook that is down never holds a migration's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Runs an assessment.
    Assess,
    /// Every step of a migration, one at a time per migration. Accepts the per-step names messages
    /// carried before the queues were merged, so messages in flight across an upgrade still decode.
    #[serde(alias = "validate", alias = "create-link", alias = "cutover", alias = "cancel")]
    Migration,
    /// Notifications (webhook and log).
    Notify,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 3] = [Stage::Assess, Stage::Migration, Stage::Notify];

    /// The stage's name: the queue is `<prefix><name>`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Assess => "assess",
            Stage::Migration => "migration",
            Stage::Notify => "notify",
        }
    }

    /// The Functions folder (= function name) of the stage's queue trigger.
    pub const fn function_name(self) -> &'static str {
        match self {
            Stage::Assess => "Assess",
            Stage::Migration => "MigrationSteps",
            Stage::Notify => "Notify",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Payload {
    /// A command of a migration's flow.
    Migration {
        /// Which migration.
        migration_id: MigrationId,
        /// What to do.
        command: Command,
    },
    /// Run an assessment.
    Assess {
        /// Which assessment.
        assessment_id: String,
        /// Of which connection.
        connection: ConnectionName,
    },
    /// An assessment finished: notify.
    AssessmentCompleted {
        /// Which assessment.
        assessment_id: String,
        /// What to say.
        message: String,
    },
}

/// A message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Deterministic id (dedup key).
    pub envelope_id: String,
    /// The stage (queue) that handles it.
    pub stage: Stage,
    /// Messages with the same ordering key are handled one at a time, in order (the migration id;
    /// Service Bus SessionId).
    pub ordering_key: String,
    /// What to do.
    pub payload: Payload,
    /// W3C trace context of the step that emitted it, when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
}

impl Envelope {
    /// The envelope for a migration command emitted by the transition that produced `version`.
    pub fn for_command(migration_id: &MigrationId, version: u64, index: usize, command: Command) -> Self {
        // Notifications get their own ordering key: a webhook that is down must not hold up the
        // migration's own steps behind its retries.
        let ordering_key = match command {
            Command::Notify { .. } => format!("{migration_id}:notify"),
            _ => migration_id.to_string(),
        };
        Self {
            envelope_id: format!("{}:{}:{}:{}", migration_id, command.name(), version, index),
            stage: command.stage(),
            ordering_key,
            payload: Payload::Migration { migration_id: migration_id.clone(), command },
            trace_parent: None,
        }
    }

    /// Envelopes for every command of a transition saved at `version`.
    pub fn for_commands(migration_id: &MigrationId, version: u64, commands: Vec<Command>) -> Vec<Self> {
        commands.into_iter().enumerate().map(|(i, c)| Self::for_command(migration_id, version, i, c)).collect()
    }

    /// Sets the trace context.
    pub fn with_trace_parent(mut self, trace_parent: Option<String>) -> Self {
        self.trace_parent = trace_parent;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Service Bus trigger metadata names (reference/functions-host.md §1.3); compared case-insensitively
    /// because the host's binding-data dictionary is.
    const SERVICE_BUS_METADATA: &[&str] = &[
        "MessageId", "SessionId", "DeliveryCount", "CorrelationId", "Subject", "Label", "To", "ReplyTo",
        "ReplyToSessionId", "ContentType", "SequenceNumber", "LockToken", "PartitionKey", "TransactionPartitionKey",
        "EnqueuedTimeUtc", "EnqueuedTime", "ExpiresAtUtc", "ExpiresAt", "DeadLetterSource", "UserProperties",
        "ApplicationProperties", "MessageReceiver", "MessageSession", "MessageActions", "SessionActions",
        "ReceiveActions", "Client", "sys", "State", "TimeToLive", "ScheduledEnqueueTime",
    ];

    #[test]
    fn envelope_fields_never_collide_with_service_bus_metadata() {
        let envelope = Envelope::for_command(&MigrationId("m".into()), 3, 0, Command::Validate);
        let value = serde_json::to_value(&envelope).unwrap();
        for key in value.as_object().unwrap().keys() {
            assert!(
                !SERVICE_BUS_METADATA.iter().any(|m| m.eq_ignore_ascii_case(key)),
                "envelope field {key} would be overwritten by the Functions host"
            );
        }
    }

    #[test]
    fn messages_named_by_the_old_per_step_queues_still_decode() {
        for old in ["validate", "create-link", "cutover", "cancel"] {
            let stage: Stage = serde_json::from_value(serde_json::json!(old)).unwrap();
            assert_eq!(stage, Stage::Migration);
        }
        assert_eq!(serde_json::to_value(Stage::Migration).unwrap(), "migration");
    }

    #[test]
    fn ids_are_deterministic_per_transition() {
        let id = MigrationId("m".into());
        let a = Envelope::for_commands(&id, 7, vec![Command::Validate, Command::CreateLink]);
        let b = Envelope::for_commands(&id, 7, vec![Command::Validate, Command::CreateLink]);
        assert_eq!(a, b);
        assert_ne!(a[0].envelope_id, a[1].envelope_id);
    }
}
