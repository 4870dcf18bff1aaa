//! TLS for milink's own connections and for the subscription's, with libpq's meaning of every setting.
//!
//! A connection's url carries libpq's names: `sslmode` (disable, allow, prefer, require, verify-ca,
//! verify-full), `sslrootcert` (a PEM file of trusted CAs, or `system` for the operating system's roots),
//! `sslcert`/`sslkey` (a client certificate and its key). The driver's url parser knows only three modes
//! and none of the files, so [`split_url`] takes these settings out before the driver sees the url; the
//! same values are written, unchanged, into the libpq connection string the target uses for the
//! subscription, so both connections verify the same way (`connect.rs`).
//!
//! What each mode checks, as libpq does: `disable` never encrypts; `allow` tries without TLS and encrypts
//! only when the server refuses that; `prefer` encrypts when the server offers TLS; `require` encrypts
//! without judging the certificate — unless `sslrootcert` is given, when it checks the chain like
//! `verify-ca` (libpq's rule); `verify-ca` checks the chain up to a trusted root; `verify-full` also
//! checks that the certificate names the host the url connects to. Without `sslrootcert`, the verifying
//! modes trust the operating system's roots (libpq would look for `~/.postgresql/root.crt`; a service has
//! no such home, and the system roots are what managed services' certificates chain to). Nothing here
//! ever falls back to a weaker mode: a verifying mode that cannot verify fails, with an error that names
//! the connection and the fix ([`certificate_error`]).
//!
//! The verifier is our own only because rustls's stock verifier always checks the host name, and
//! `verify-ca` must not; the checks themselves are rustls's (`verify_server_cert_signed_by_trust_anchor`,
//! `verify_server_name`). It also keeps the certificate it saw, for `milink doctor`. rustls with the `ring`
//! provider is used because the workspace already builds it (reqwest), so TLS adds no C toolchain or
//! system OpenSSL to the build.
use crate::errors::Place;
use milink_core::EngineError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex, OnceLock};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// A connection's TLS settings, as written in its url.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// The mode; `written` says whether the url named it (only then is it repeated in a conninfo).
    pub(crate) mode: SslMode,
    pub(crate) mode_written: bool,
    /// A PEM file of trusted CAs, or `system`.
    pub(crate) root_cert: Option<String>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
}

impl TlsSettings {
    /// The mode milink enforces: libpq treats `require` with a root certificate as `verify-ca`.
    pub(crate) fn effective_mode(&self) -> SslMode {
        match self.mode {
            SslMode::Require if self.root_cert.is_some() => SslMode::VerifyCa,
            mode => mode,
        }
    }

    /// The settings as libpq connection-string pairs, in a stable order.
    pub(crate) fn conninfo_pairs(&self) -> Vec<(&'static str, &str)> {
        let mut pairs = Vec::new();
        if self.mode_written {
            pairs.push(("sslmode", self.mode.as_str()));
        }
        for (key, value) in [("sslrootcert", &self.root_cert), ("sslcert", &self.cert), ("sslkey", &self.key)] {
            if let Some(value) = value {
                pairs.push((key, value.as_str()));
            }
        }
        pairs
    }
}

/// Settings libpq has and milink does not implement: refused rather than ignored.
const UNSUPPORTED: [(&str, &str); 3] = [
    ("sslcrl", "certificate revocation lists are not checked by milink"),
    ("sslcrldir", "certificate revocation lists are not checked by milink"),
    ("sslpassword", "encrypted client keys are not supported: give sslkey an unencrypted key file readable only by milink"),
];

/// Takes the TLS settings out of a url (URI or key=value form) and returns the rest for the driver.
/// The error says which setting is wrong, never echoing the url.
pub(crate) fn split_url(url: &str) -> Result<(String, TlsSettings), String> {
    let mut settings = TlsSettings::default();
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(name, _)| *name == key) {
            return Err(format!("{key} is not supported ({why})"));
        }
        match key {
            "sslmode" => {
                settings.mode = SslMode::parse(&value).ok_or_else(|| {
                    format!("sslmode '{value}' is not one of disable, allow, prefer, require, verify-ca, verify-full")
                })?;
                settings.mode_written = true;
            }
            "sslrootcert" => settings.root_cert = Some(value),
            "sslcert" => settings.cert = Some(value),
            "sslkey" => settings.key = Some(value),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgresql://") || url.starts_with("postgres://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let value = percent_encoding::percent_decode_str(value)
                        .decode_utf8()
                        .map_err(|_| format!("the value of {key} is not valid UTF-8"))?;
                    if !take(key, value.into_owned())? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value, raw) in key_value_pairs(url)? {
            if !take(key, value)? {
                kept.push(raw);
            }
        }
        kept.join(" ")
    };
    if settings.cert.is_some() != settings.key.is_some() {
        return Err("sslcert and sslkey go together: name both files, or neither".into());
    }
    if settings.mode == SslMode::Disable && (settings.root_cert.is_some() || settings.cert.is_some()) {
        return Err("sslmode=disable with certificate files: the files would be ignored; remove them or pick a mode that uses TLS".into());
    }
    Ok((rest, settings))
}

/// The pairs of a libpq key=value string: key, unquoted value, and the pair's original text.
fn key_value_pairs(text: &str) -> Result<Vec<(&str, String, &str)>, String> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let start = rest;
        let equals = rest.find('=').ok_or("a key=value pair has no '='")?;
        let key = rest[..equals].trim();
        rest = rest[equals + 1..].trim_start();
        let mut value = String::new();
        let mut chars = rest.char_indices().peekable();
        let quoted = rest.starts_with('\'');
        if quoted {
            chars.next();
        }
        let mut end = rest.len();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '\'' if quoted => {
                    end = at + 1;
                    break;
                }
                c if c.is_whitespace() && !quoted => {
                    end = at;
                    break;
                }
                c => value.push(c),
            }
        }
        let consumed = start.len() - rest.len() + end;
        pairs.push((key, value, start[..consumed].trim_end()));
        rest = start[consumed..].trim_start();
    }
    Ok(pairs)
}

/// Who checks the server's certificate, and how.
#[derive(Debug)]
enum Policy {
    EncryptOnly,
    Chain { roots: Arc<RootCertStore>, name: bool },
}

/// The certificate the server presented, kept by the verifier for `milink doctor`.
pub(crate) type SeenCertificate = Arc<Mutex<Option<CertificateDer<'static>>>>;

#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    policy: Policy,
    seen: SeenCertificate,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.clone().into_owned());
        }
        if let Policy::Chain { roots, name } = &self.policy {
            let cert = ParsedCertificate::try_from(end_entity)?;
            let algorithms = self.provider.signature_verification_algorithms.all;
            verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, algorithms)?;
            if *name {
                verify_server_name(&cert, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS setting that cannot be used: a file missing or not PEM, a key that does not match.
fn setup_error(place: &Place, what: String, fix: String) -> EngineError {
    EngineError::definite("tls_settings_invalid", format!("{}: TLS settings: {what}", place.label()), fix)
}

/// The operating system's trusted roots, read once (hundreds of certificates).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("the operating system has no trusted root certificates (install ca-certificates, or set SSL_CERT_FILE)".into());
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

fn roots(settings: &TlsSettings, place: &Place) -> Result<Arc<RootCertStore>, EngineError> {
    let connection = &place.connection;
    match settings.root_cert.as_deref() {
        None | Some("system") => system_roots().map_err(|why| {
            setup_error(place, why, format!("Name the CA file in the url of connection '{connection}' (sslrootcert=/path/ca.crt)."))
        }),
        Some(file) => {
            let unreadable = |why: String| {
                setup_error(
                    place,
                    format!("sslrootcert '{file}': {why}"),
                    format!(
                        "Point sslrootcert in the url of connection '{connection}' to a readable PEM file holding the CA \
                         certificate(s) that signed the server's certificate."
                    ),
                )
            };
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| unreadable(pem_reason(&e)))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unreadable(pem_reason(&e)))?;
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(unreadable("it holds no usable certificate".into()));
            }
            Ok(Arc::new(roots))
        }
    }
}

fn pem_reason(error: &rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(io) => io.kind().to_string(),
        _ => "it is not a PEM file".into(),
    }
}

/// An encrypting connector that does not judge the certificate (libpq's `require` without a root
/// certificate), for the pooler's admin console, whose config has no verification settings yet.
pub(crate) fn connector() -> MakeRustlsConnect {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier { provider: provider.clone(), policy: Policy::EncryptOnly, seen: SeenCertificate::default() };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

/// The connector for one connection's settings. Files are read on every call, so a renewed CA or client
/// certificate is picked up without a restart.
pub(crate) fn connector_for(settings: &TlsSettings, place: &Place, seen: SeenCertificate) -> Result<MakeRustlsConnect, EngineError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let policy = match settings.effective_mode() {
        SslMode::VerifyCa => Policy::Chain { roots: roots(settings, place)?, name: false },
        SslMode::VerifyFull => Policy::Chain { roots: roots(settings, place)?, name: true },
        _ => Policy::EncryptOnly,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { provider, policy, seen }));
    let config = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let connection = &place.connection;
            let fix = || format!("Point sslcert and sslkey in the url of connection '{connection}' to the client certificate (PEM) and its unencrypted key.");
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| setup_error(place, format!("sslcert '{cert}': {}", pem_reason(&e)), fix()))?;
            // The key's contents never reach a message: only the file name and why it is unusable.
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| setup_error(place, format!("sslkey '{key}': {}", pem_reason(&e)), fix()))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|_| {
                setup_error(place, format!("sslkey '{key}' is not the key of sslcert '{cert}', or its type is unsupported"), fix())
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// One clear error for a certificate the connection refused (or the server refused ours), naming the
/// connection and what to change; `None` when the failure is not about certificates.
pub(crate) fn certificate_error(error: &tokio_postgres::Error, place: &Place, settings: &TlsSettings) -> Option<EngineError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let tls = loop {
        let current = cause?;
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            break found;
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if let Some(found) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                break found;
            }
        }
        cause = current.source();
    };
    let connection = &place.connection;
    let trusted = match settings.root_cert.as_deref() {
        None | Some("system") => "the operating system's trusted roots".to_owned(),
        Some(file) => format!("the CA in sslrootcert '{file}'"),
    };
    let (code, what, fix) = match tls {
        rustls::Error::InvalidCertificate(problem) => match problem {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                "tls_certificate_expired",
                "the server's certificate has expired".to_owned(),
                format!("Renew the certificate of the server behind connection '{connection}' (ssl_cert_file) and reload it (SELECT pg_reload_conf())."),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                "tls_certificate_not_yet_valid",
                "the server's certificate is not valid yet".to_owned(),
                format!("Check the clocks of milink's host and of the server behind connection '{connection}', or reissue its certificate."),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => (
                "tls_certificate_wrong_host",
                format!("the server's certificate does not name the host of {} that the url connects to", place.address),
                format!(
                    "Write in the url of connection '{connection}' a host name the certificate lists (its subjectAltName), \
                     or reissue the certificate with that name."
                ),
            ),
            _ => (
                "tls_certificate_untrusted",
                format!("the server's certificate is not signed by {trusted} ({problem:?})"),
                format!(
                    "Set sslrootcert in the url of connection '{connection}' to the PEM file of the CA that signed the \
                     server's certificate (sslrootcert=system for a public CA)."
                ),
            ),
        },
        rustls::Error::AlertReceived(alert) => (
            "tls_client_certificate_refused",
            format!("the server refused the TLS handshake ({alert:?}), most often because it wants a client certificate it trusts"),
            format!(
                "Give connection '{connection}' a client certificate the server's ssl_ca_file trusts, for the url's user \
                 (sslcert and sslkey in the url)."
            ),
        ),
        other => (
            "tls_failed",
            format!("the TLS handshake failed: {other}"),
            format!("Check the TLS settings of connection '{connection}' (sslmode, sslrootcert) and the server's ssl settings."),
        ),
    };
    Some(EngineError::definite(code, format!("{}: connecting with sslmode={}: {what}", place.label(), settings.mode.as_str()), fix))
}

/// The same for the target's libpq reaching the source (the subscription): libpq's messages, read.
pub(crate) fn publisher_certificate_error(text: &str, source: &Place, doing: &str) -> Option<EngineError> {
    let connection = &source.connection;
    let on_target = "the target's server process, on the target's host";
    let (code, fix) = if text.contains("does not match host name") {
        (
            "tls_certificate_wrong_host",
            format!(
                "The source's certificate does not name the host the target connects to: write a host it lists in \
                 replication_url (or url) of connection '{connection}', or reissue the certificate with that name."
            ),
        )
    } else if text.contains("certificate has expired") {
        ("tls_certificate_expired", format!("Renew the certificate of the source server of connection '{connection}' and reload it."))
    } else if text.contains("certificate verify failed") {
        (
            "tls_certificate_untrusted",
            format!(
                "The target does not trust the source's certificate (or it has expired): the sslrootcert in \
                 replication_url (or url) of connection '{connection}' must name, as a path {on_target} reads, the CA \
                 that signed it; check also that the certificate has not expired."
            ),
        )
    } else if text.contains("root certificate file") || text.contains("certificate file") || text.contains("private key file") {
        (
            "tls_file_missing_on_target",
            format!(
                "The certificate files named in the conninfo are read by {on_target}: copy them there (readable by the \
                 postgres OS user) and name those paths in replication_url of connection '{connection}'. See docs/tls.md."
            ),
        )
    } else if text.contains("SSL") && text.contains("not support") {
        ("tls_not_offered", format!("The source of connection '{connection}' does not offer TLS: set ssl = on there, or lower sslmode."))
    } else {
        return None;
    };
    Some(EngineError::definite(code, format!("{}: {doing}: {text}", source.label()), fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libpq_mode_parses_and_unknown_ones_are_refused() {
        for mode in ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] {
            let (_, settings) = split_url(&format!("postgresql://u@h/db?sslmode={mode}")).unwrap();
            assert_eq!(settings.mode.as_str(), mode);
        }
        let error = split_url("postgresql://u@h/db?sslmode=verify").unwrap_err();
        assert!(error.contains("verify-full"), "{error}");
    }

    #[test]
    fn tls_settings_leave_the_url_and_the_rest_stays() {
        let (rest, settings) = split_url(
            "postgresql://u@h:5432/db?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt&sslcert=/c.crt&sslkey=/c.key",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u@h:5432/db?connect_timeout=5");
        assert_eq!(settings.effective_mode(), SslMode::VerifyFull);
        assert_eq!(settings.root_cert.as_deref(), Some("/etc/ca.crt"));
        assert_eq!(
            settings.conninfo_pairs(),
            vec![("sslmode", "verify-full"), ("sslrootcert", "/etc/ca.crt"), ("sslcert", "/c.crt"), ("sslkey", "/c.key")]
        );
        let (rest, settings) = split_url("host=h user=u sslrootcert='/my ca.crt' sslmode=require dbname=x").unwrap();
        assert_eq!(rest, "host=h user=u dbname=x");
        assert_eq!(settings.root_cert.as_deref(), Some("/my ca.crt"));
        // libpq: require with a root certificate verifies the chain.
        assert_eq!(settings.effective_mode(), SslMode::VerifyCa);
        let (rest, settings) = split_url("postgresql://u@h/db").unwrap();
        assert_eq!((rest.as_str(), settings.mode, settings.mode_written), ("postgresql://u@h/db", SslMode::Prefer, false));
        assert!(settings.conninfo_pairs().is_empty());
    }

    #[test]
    fn settings_milink_cannot_honour_are_refused_not_ignored() {
        assert!(split_url("postgresql://u@h/db?sslcrl=/x").unwrap_err().contains("revocation"));
        assert!(split_url("postgresql://u@h/db?sslpassword=x").unwrap_err().contains("encrypted"));
        assert!(split_url("postgresql://u@h/db?sslcert=/c.crt").unwrap_err().contains("together"));
        assert!(split_url("postgresql://u@h/db?sslmode=disable&sslrootcert=/ca").unwrap_err().contains("ignored"));
    }

    #[test]
    fn libpq_messages_about_certificates_become_one_clear_error() {
        let place = Place { role: "source", connection: "src".into(), address: "db:5432".into(), user: "u".into() };
        let cases = [
            ("could not connect to the publisher: SSL error: certificate verify failed", "tls_certificate_untrusted"),
            ("server certificate for \"db\" does not match host name \"x\"", "tls_certificate_wrong_host"),
            ("root certificate file \"/x/ca.crt\" does not exist", "tls_file_missing_on_target"),
        ];
        for (text, code) in cases {
            let error = publisher_certificate_error(text, &place, "subscribing").unwrap();
            assert_eq!(error.code, code);
            assert!(error.remediation.contains("'src'"), "{}", error.remediation);
        }
        assert!(publisher_certificate_error("password authentication failed", &place, "x").is_none());
    }
}
