//! How milink proves who it is to Table Storage and Service Bus.
//!
//! Two ways each, chosen by configuration:
//! - **keys** for development and Azurite: Table Storage *Shared Key* (an HMAC-SHA256 of the request's
//!   canonical form with the account key) and a Service Bus *SAS token* (an HMAC-SHA256 of the resource URI
//!   and an expiry with a named policy's key). Both are computed here, in a few lines, from the documented
//!   string-to-sign formats.
//! - **Entra ID tokens** in production: any `azure_core` [`TokenCredential`], normally azure_identity's
//!   [`ManagedIdentityCredential`] for the Function App's user-assigned identity. We use the official crate
//!   rather than calling the identity endpoint ourselves because it already handles both App Service
//!   (`IDENTITY_ENDPOINT`, what Functions provide) and IMDS, user-assigned ids, and token caching.
//!
//! Evidence behind the transport adapter below: the workspace builds `azure_core` 1.x without its `reqwest`
//! feature (which would pull reqwest 0.13 beside our 0.12 and a second TLS stack), and in that build
//! `azure_core::http::new_http_client` panics ("The `reqwest` feature is required to use the default HTTP
//! client", typespec_client_core 1.1 `http/clients/mod.rs`). So every credential we build gets
//! [`ReqwestTransport`], a 40-line `HttpClient` over our own reqwest client.
//!
//! Keys and tokens are held in [`Secret`]s and never logged.
use azure_core::credentials::TokenCredential;
use azure_core::http::{AsyncRawResponse, HttpClient, Request};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use milink_core::config::Secret;
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

pub use azure_identity::ManagedIdentityCredential;

/// The Entra scope of Azure Storage.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The Entra scope of Service Bus.
pub const SERVICE_BUS_SCOPE: &str = "https://servicebus.azure.net/.default";

/// A failure to authenticate, with what to check.
#[derive(Debug, thiserror::Error)]
#[error("authentication: {0}")]
pub struct AuthError(pub String);

/// How requests to Table Storage are signed.
#[derive(Clone)]
pub enum StorageAuth {
    /// Shared Key with the account key (Azurite, development).
    SharedKey {
        /// Storage account name.
        account: String,
        /// The account key, base64 as the portal shows it.
        key: Secret,
    },
    /// Entra ID bearer tokens (managed identity in production).
    Token(Arc<dyn TokenCredential>),
}

impl fmt::Debug for StorageAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageAuth::SharedKey { account, .. } => write!(f, "SharedKey({account})"),
            StorageAuth::Token(_) => f.write_str("Token"),
        }
    }
}

/// How requests to Service Bus are signed.
#[derive(Clone)]
pub enum BusAuth {
    /// A SAS token made from a shared access policy's key.
    Sas {
        /// The policy name (`RootManageSharedAccessKey`, or a send-only policy).
        key_name: String,
        /// The policy's key.
        key: Secret,
    },
    /// Entra ID bearer tokens (managed identity in production).
    Token(Arc<dyn TokenCredential>),
}

impl fmt::Debug for BusAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusAuth::Sas { key_name, .. } => write!(f, "Sas({key_name})"),
            BusAuth::Token(_) => f.write_str("Token"),
        }
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The Table service's Shared Key string-to-sign: verb, Content-MD5, Content-Type, Date, and the
/// canonicalized resource (`/account/path`, plus `?comp=` when present), one per line.
pub fn table_string_to_sign(verb: &str, content_type: &str, date: &str, account: &str, url: &reqwest::Url) -> String {
    let mut resource = format!("/{account}{}", url.path());
    if let Some((_, comp)) = url.query_pairs().find(|(name, _)| name == "comp") {
        resource.push_str("?comp=");
        resource.push_str(&comp);
    }
    format!("{verb}\n\n{content_type}\n{date}\n{resource}")
}

/// The `Authorization` header value for a Table request signed with the account key.
pub fn table_shared_key(account: &str, key: &Secret, string_to_sign: &str) -> Result<String, AuthError> {
    let key = BASE64
        .decode(key.expose())
        .map_err(|_| AuthError("the storage account key is not valid base64; copy it again from the portal".into()))?;
    Ok(format!("SharedKey {account}:{}", BASE64.encode(hmac_sha256(&key, string_to_sign.as_bytes()))))
}

const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes one URL component (RFC 3986 unreserved characters stay).
pub fn encode_component(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, URL_COMPONENT).to_string()
}

/// A Service Bus SAS token for `resource_uri`, valid until `expiry` (Unix seconds): `sr` is the encoded
/// URI, `sig` the HMAC-SHA256 of `sr + "\n" + expiry` with the policy key (its text, not base64-decoded:
/// Service Bus keys are used as they are).
pub fn service_bus_sas(resource_uri: &str, key_name: &str, key: &Secret, expiry: i64) -> String {
    let encoded_uri = encode_component(resource_uri);
    let signature = BASE64.encode(hmac_sha256(key.expose().as_bytes(), format!("{encoded_uri}\n{expiry}").as_bytes()));
    format!(
        "SharedAccessSignature sr={encoded_uri}&sig={}&se={expiry}&skn={}",
        encode_component(&signature),
        encode_component(key_name)
    )
}

/// A bearer token for `scope` from `credential`.
pub async fn bearer(credential: &dyn TokenCredential, scope: &str) -> Result<String, AuthError> {
    let token = credential
        .get_token(&[scope], None)
        .await
        .map_err(|e| AuthError(format!("no Entra token for {scope}: {e}; check the managed identity and its role assignments")))?;
    Ok(format!("Bearer {}", token.token.secret()))
}

/// The Function App's managed identity: the user-assigned one whose client id is given (the
/// `AZURE_CLIENT_ID` app setting), else the system-assigned one.
pub fn managed_identity(client_id: Option<&str>, http: reqwest::Client) -> Result<Arc<dyn TokenCredential>, AuthError> {
    let options = azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(|id| azure_identity::UserAssignedId::ClientId(id.to_owned())),
        client_options: azure_core::http::ClientOptions {
            transport: Some(azure_core::http::Transport::new(Arc::new(ReqwestTransport(http)))),
            ..Default::default()
        },
    };
    let credential = ManagedIdentityCredential::new(Some(options)).map_err(|e| AuthError(e.to_string()))?;
    Ok(credential)
}

/// azure_core's `HttpClient` over our reqwest client (see the module doc for why).
#[derive(Debug, Clone)]
pub struct ReqwestTransport(pub reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for ReqwestTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        use azure_core::error::ErrorKind;
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .map_err(|e| azure_core::Error::new(ErrorKind::Other, e))?;
        let mut outgoing = self.0.request(method, request.url().as_str());
        for (name, value) in request.headers().iter() {
            outgoing = outgoing.header(name.as_str(), value.as_str());
        }
        if let azure_core::http::Body::Bytes(bytes) = request.body() {
            outgoing = outgoing.body(bytes.to_vec());
        }
        let response = outgoing.send().await.map_err(|e| azure_core::Error::new(ErrorKind::Io, e))?;
        let status = azure_core::http::StatusCode::from(response.status().as_u16());
        let mut headers = azure_core::http::headers::Headers::new();
        for (name, value) in response.headers() {
            if let Ok(value) = value.to_str() {
                headers.insert(name.as_str().to_owned(), value.to_owned());
            }
        }
        let body = response.bytes().await.map_err(|e| azure_core::Error::new(ErrorKind::Io, e))?;
        Ok(AsyncRawResponse::from_bytes(status, headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_token_has_the_documented_shape_and_signature() {
        // Recomputed independently: HMAC-SHA256("key", "https%3A%2F%2Fns.servicebus.windows.net%2Fq\n1700000000").
        let token = service_bus_sas("https://ns.servicebus.windows.net/q", "send", &Secret::new("key"), 1_700_000_000);
        assert!(token.starts_with("SharedAccessSignature sr=https%3A%2F%2Fns.servicebus.windows.net%2Fq&sig="), "{token}");
        assert!(token.ends_with("&se=1700000000&skn=send"), "{token}");
        let sig = token.split("&sig=").nth(1).unwrap().split('&').next().unwrap();
        let sig = percent_encoding::percent_decode_str(sig).decode_utf8().unwrap();
        let expected = BASE64.encode(hmac_sha256(b"key", b"https%3A%2F%2Fns.servicebus.windows.net%2Fq\n1700000000"));
        assert_eq!(sig, expected);
    }

    #[test]
    fn table_string_to_sign_has_five_lines_and_keeps_comp() {
        let url = reqwest::Url::parse("http://127.0.0.1:10002/devstoreaccount1/Tables?comp=list&x=1").unwrap();
        let text = table_string_to_sign("POST", "application/json", "Mon, 01 Jan 2024 00:00:00 GMT", "devstoreaccount1", &url);
        assert_eq!(
            text,
            "POST\n\napplication/json\nMon, 01 Jan 2024 00:00:00 GMT\n/devstoreaccount1/devstoreaccount1/Tables?comp=list"
        );
    }

    #[test]
    fn debug_never_shows_keys() {
        let auth = StorageAuth::SharedKey { account: "acct".into(), key: Secret::new("c2VjcmV0") };
        assert_eq!(format!("{auth:?}"), "SharedKey(acct)");
        let bus = BusAuth::Sas { key_name: "send".into(), key: Secret::new("secret") };
        assert!(!format!("{bus:?}").contains("secret"));
    }
}
