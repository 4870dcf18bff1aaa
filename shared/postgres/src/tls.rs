//! TLS for milink's own connections, with libpq's meaning of `sslmode`.
//!
//! Managed PostgreSQL services refuse unencrypted connections, so milink must speak TLS. libpq's
//! `sslmode=require` (and `prefer`, when the server offers TLS) encrypts without checking the server's
//! certificate; that is what users of a url with those modes expect, and what self-hosted servers with
//! self-signed certificates need. So the verifier here accepts any certificate but still checks the
//! handshake signatures (the connection is encrypted to whoever holds the certificate's key).
//! Certificate verification (`verify-ca`, `verify-full`) is not offered: the driver's url parser does not
//! know those modes, and a url using them is refused as invalid rather than silently downgraded.
//!
//! rustls with the `ring` provider is used because the workspace already builds it (reqwest), so TLS
//! adds no C toolchain or system OpenSSL to the build.
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, OnceLock};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Encrypts, and checks signatures, without judging who signed the certificate (libpq's `require`).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The connector every session uses (built once: a rustls config is immutable and shareable).
pub(crate) fn connector() -> MakeRustlsConnect {
    static CONNECTOR: OnceLock<MakeRustlsConnect> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth();
            MakeRustlsConnect::new(config)
        })
        .clone()
}
