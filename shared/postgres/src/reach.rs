//! `test_connection(endpoint)`: the wizard's "Test connection". It opens a session exactly as every
//! other step does (the connection's url, credentials and TLS mode, through [`Server::connect`]), so a
//! pass here means the migration's own sessions will get in too, then reads the version and the
//! session's TLS state from the server's own view (`pg_stat_ssl` for this backend) rather than trusting
//! what the client asked for. Nothing is written. Errors are the ones every step classifies (unreachable,
//! authentication failed, TLS refused...), with the remediation naming the connection.
use crate::connect::Server;
use milink_core::config::Endpoint;
use milink_core::ports::ConnectionCheck;
use milink_core::EngineError;
use std::time::Instant;

pub(crate) async fn test_connection(endpoint: &Endpoint) -> Result<ConnectionCheck, EngineError> {
    let server = Server::new("connection", endpoint)?;
    let started = Instant::now();
    let session = server.connect(None).await?;
    let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    let asked = Instant::now();
    let row = session
        .row(
            "reading the version and TLS state",
            "SELECT current_setting('server_version'), coalesce(s.ssl, false), s.version
             FROM (SELECT 1) AS one LEFT JOIN pg_stat_ssl AS s ON s.pid = pg_backend_pid()",
            &[],
        )
        .await?;
    let round_trip_ms = asked.elapsed().as_secs_f64() * 1000.0;
    let tls: bool = row.get(1);
    Ok(ConnectionCheck {
        server_version: row.get(0),
        tls: Some(tls),
        tls_protocol: if tls { row.get(2) } else { None },
        connect_ms,
        round_trip_ms,
    })
}
