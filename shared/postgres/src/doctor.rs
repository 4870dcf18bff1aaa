//! `milink doctor`: what a connection's TLS actually is, as negotiated, for a security review.
//!
//! The version and cipher come from the server's own view of the session (`pg_stat_ssl`), the
//! certificate from the handshake (the verifier keeps what it saw, `tls.rs`), so the report shows what
//! was used rather than what the config asked for. It connects exactly as the migration would: a
//! certificate the connection refuses fails here with the same error.
use crate::connect::Server;
use milink_core::config::Endpoint;
use milink_core::EngineError;
use x509_cert::der::Decode;

/// One connection's TLS, as negotiated.
#[derive(Debug, Clone)]
pub struct TlsReport {
    /// The connection's name.
    pub connection: String,
    /// `host:port`.
    pub address: String,
    /// The url's sslmode (libpq's default `prefer` when it names none).
    pub sslmode: String,
    /// What milink checked of the server's certificate.
    pub verification: String,
    /// Whether the session is encrypted.
    pub encrypted: bool,
    /// `TLSv1.3`, ...
    pub version: Option<String>,
    /// The cipher suite.
    pub cipher: Option<String>,
    /// The server certificate's subject, issuer and end of validity (RFC 3339).
    pub subject: Option<String>,
    /// Who signed it.
    pub issuer: Option<String>,
    /// When it expires.
    pub expires: Option<String>,
    /// Whether milink presented a client certificate.
    pub client_certificate: bool,
}

/// Connects to a PostgreSQL connection and reports its TLS.
pub async fn tls_report(endpoint: &Endpoint) -> Result<TlsReport, EngineError> {
    let server = Server::new("connection", endpoint)?;
    let (session, certificate) = server.connect_observed().await?;
    let row = session
        .row(
            "reading the session's TLS",
            "SELECT coalesce(s.ssl, false), s.version, s.cipher FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
            &[],
        )
        .await?;
    let encrypted: bool = row.get(0);
    let tls = server.tls();
    let verification = match tls.effective_mode() {
        crate::tls::SslMode::VerifyFull => "certificate chain and host name",
        crate::tls::SslMode::VerifyCa => "certificate chain (not the host name)",
        _ if encrypted => "none: encrypted, but the certificate is not checked",
        _ => "none: not encrypted",
    };
    let (subject, issuer, expires) = match certificate.as_deref().map(x509_cert::Certificate::from_der) {
        Some(Ok(cert)) => {
            let tbs = &cert.tbs_certificate;
            let expires = tbs.validity.not_after.to_unix_duration().as_secs();
            let expires = chrono::DateTime::from_timestamp(expires as i64, 0).map(|t| t.to_rfc3339());
            (Some(tbs.subject.to_string()), Some(tbs.issuer.to_string()), expires)
        }
        _ => (None, None, None),
    };
    Ok(TlsReport {
        connection: endpoint.name.as_str().to_owned(),
        address: server.place().address.clone(),
        sslmode: tls.mode.as_str().to_owned(),
        verification: verification.to_owned(),
        encrypted,
        version: if encrypted { row.get(1) } else { None },
        cipher: if encrypted { row.get(2) } else { None },
        subject,
        issuer,
        expires,
        client_certificate: encrypted && tls.cert.is_some(),
    })
}
