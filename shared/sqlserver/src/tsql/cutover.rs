//! The SQL Server side of a cutover (mi-link.md §3.2–3.3): commit mode, failover, fence and unfence.
//!
//! Fencing disables the application logins named in the migration's settings and ends their sessions;
//! unfencing enables them again. `KILL` takes no parameter, so session ids come from the server as
//! integers and are formatted as integers, never as text.
use super::Statement;
use crate::names::{quote_ident, quote_literal};

/// Switches both members of the distributed AG to synchronous (cutover) or asynchronous (abort) commit.
pub fn set_commit_mode(distributed_ag: &str, local_ag: &str, instance_ag: &str, synchronous: bool) -> Statement {
    let mode = if synchronous { "SYNCHRONOUS_COMMIT" } else { "ASYNCHRONOUS_COMMIT" };
    Statement::new(format!(
        "ALTER AVAILABILITY GROUP {}\n\
         MODIFY AVAILABILITY GROUP ON\n\
         \x20   {} WITH (AVAILABILITY_MODE = {mode}),\n\
         \x20   {} WITH (AVAILABILITY_MODE = {mode})",
        quote_ident(distributed_ag),
        quote_literal(local_ag),
        quote_literal(instance_ag)
    ))
}

/// Commit mode of both members of the distributed AG, to verify the switch. Columns: `member`,
/// `availability_mode_desc`.
pub fn commit_mode(distributed_ag: &str) -> Statement {
    Statement::new(
        "SELECT ar.replica_server_name AS member, ar.availability_mode_desc\n\
         FROM sys.availability_groups AS ag\n\
         JOIN sys.availability_replicas AS ar ON ar.group_id = ag.group_id\n\
         WHERE ag.is_distributed = 1 AND ag.name = @P1",
    )
    .text(distributed_ag)
}

/// Planned failover to the MI keeping the link (SQL Server 2022 CU13+ / 2025), run on the primary.
pub fn failover(distributed_ag: &str) -> Statement {
    Statement::new(format!("ALTER AVAILABILITY GROUP {} FAILOVER", quote_ident(distributed_ag)))
}

/// Disables a login (fence). Idempotent: disabling a disabled login is a no-op.
pub fn disable_login(login: &str) -> Statement {
    Statement::new(format!(
        "IF EXISTS (SELECT 1 FROM sys.server_principals WHERE name = @P1) ALTER LOGIN {} DISABLE",
        quote_ident(login)
    ))
    .text(login)
}

/// Enables a login (unfence).
pub fn enable_login(login: &str) -> Statement {
    Statement::new(format!(
        "IF EXISTS (SELECT 1 FROM sys.server_principals WHERE name = @P1) ALTER LOGIN {} ENABLE",
        quote_ident(login)
    ))
    .text(login)
}

/// The user sessions of a login other than milink's own. Column: `session_id`.
pub fn sessions_of_login(login: &str) -> Statement {
    Statement::new(
        "SELECT CAST(session_id AS bigint) AS session_id FROM sys.dm_exec_sessions\n\
         WHERE login_name = @P1 AND is_user_process = 1 AND session_id <> @@SPID",
    )
    .text(login)
}

/// Ends one session. `None` for ids that cannot be user sessions.
pub fn kill_session(session_id: i64) -> Option<Statement> {
    (session_id > 0 && session_id <= i64::from(i16::MAX)).then(|| Statement::new(format!("KILL {session_id}")))
}

/// Whether the named logins are disabled. Columns: `name`, `is_disabled`.
pub fn login_states(logins: &[String]) -> Statement {
    let placeholders: Vec<String> = (1..=logins.len()).map(|i| format!("@P{i}")).collect();
    let list = if placeholders.is_empty() { "NULL".to_owned() } else { placeholders.join(", ") };
    let mut statement = Statement::new(format!(
        "SELECT name, CAST(is_disabled AS int) AS is_disabled FROM sys.server_principals WHERE name IN ({list})"
    ));
    for login in logins {
        statement = statement.text(login.clone());
    }
    statement
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_takes_only_plausible_session_ids() {
        assert_eq!(kill_session(57).unwrap().sql, "KILL 57");
        assert!(kill_session(0).is_none());
        assert!(kill_session(-1).is_none());
        assert!(kill_session(1 << 40).is_none());
    }

    #[test]
    fn commit_mode_names_both_members() {
        let sql = set_commit_mode("milink_x", "milink_x_ag", "milink_x_mi", true).sql;
        assert_eq!(sql.matches("SYNCHRONOUS_COMMIT").count(), 2);
        assert!(sql.starts_with("ALTER AVAILABILITY GROUP [milink_x]"));
    }
}
