//! The Service Bus sender against a local double that checks each request against the documented REST
//! contract (learn.microsoft.com/rest/api/servicebus/send-message-to-queue): `POST {namespace}/{queue}/messages`,
//! `Authorization` as a SAS token (recomputed here from the key) or an Entra bearer token (from a fixed
//! credential, and from azure_identity's managed-identity credential against an App Service identity
//! endpoint double), `BrokerProperties` JSON with MessageId, SessionId and ScheduledEnqueueTimeUtc in
//! RFC 1123, the body as sent, application properties as headers; and how failures are classified.
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use milink_azure::auth::BusAuth;
use milink_azure::servicebus::SendError;
use milink_azure::{BusMessage, Publisher, ServiceBusConfig, ServiceBusSender};
use milink_core::config::Secret;
use milink_core::flow::Command;
use milink_core::message::Envelope;
use milink_core::names::MigrationId;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    headers: HeaderMap,
    body: String,
}

#[derive(Clone, Default)]
struct Double {
    requests: Arc<Mutex<Vec<Recorded>>>,
    answer: Arc<Mutex<Option<u16>>>,
}

async fn receive(State(double): State<Double>, uri: Uri, headers: HeaderMap, body: String) -> StatusCode {
    double.requests.lock().unwrap().push(Recorded { path: uri.path().to_owned(), headers, body });
    StatusCode::from_u16(double.answer.lock().unwrap().unwrap_or(201)).unwrap()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

async fn double() -> (Double, String) {
    let double = Double::default();
    let url = serve(Router::new().route("/{queue}/messages", post(receive)).with_state(double.clone())).await;
    (double, url)
}

fn sender(url: &str, auth: BusAuth) -> ServiceBusSender {
    ServiceBusSender::new(ServiceBusConfig { namespace_url: url.into(), auth, queue_prefix: "milink-".into() }, reqwest::Client::new()).unwrap()
}

fn envelope() -> Envelope {
    Envelope::for_command(&MigrationId("6f1c-m".into()), 7, 0, Command::CreateLink)
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8().unwrap().into_owned()
}

#[tokio::test]
async fn a_scheduled_retry_is_a_documented_send_with_a_valid_sas_token() {
    let (double, url) = double().await;
    let key = "c2VjcmV0LWtleQ==";
    let sender = sender(&url, BusAuth::Sas { key_name: "milink-send".into(), key: Secret::new(key) });
    let at = chrono::DateTime::parse_from_rfc3339("2030-11-06T08:49:37Z").unwrap().to_utc();
    sender.send(&BusMessage::retry_of(&envelope(), "milink-", 3, at)).await.unwrap();

    let request = double.requests.lock().unwrap()[0].clone();
    assert_eq!(request.path, "/milink-migration/messages");
    assert_eq!(request.headers["content-type"], "application/json");
    let broker: Value = serde_json::from_str(request.headers["brokerproperties"].to_str().unwrap()).unwrap();
    assert_eq!(
        broker,
        json!({ "MessageId": "6f1c-m:create-link:7:0:retry3", "SessionId": "6f1c-m", "ScheduledEnqueueTimeUtc": "Wed, 06 Nov 2030 08:49:37 GMT" })
    );
    assert_eq!(request.headers["milinkattempt"], "3", "application properties travel as headers");
    assert_eq!(serde_json::from_str::<Envelope>(&request.body).unwrap(), envelope());

    // SharedAccessSignature sr=<encoded URI>&sig=<encoded base64 HMAC>&se=<expiry>&skn=<policy>
    let token = request.headers["authorization"].to_str().unwrap();
    let fields: HashMap<&str, &str> =
        token.strip_prefix("SharedAccessSignature ").unwrap().split('&').map(|kv| kv.split_once('=').unwrap()).collect();
    assert_eq!(decode(fields["sr"]), format!("{url}/milink-migration"));
    assert_eq!(fields["skn"], "milink-send");
    let expiry: i64 = fields["se"].parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(expiry > now && expiry <= now + 3600, "expiry {expiry} within the hour");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{}\n{}", fields["sr"], fields["se"]).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(decode(fields["sig"]), expected, "the signature verifies with the policy key");
}

#[tokio::test]
async fn published_envelopes_go_to_their_stage_queue_without_a_schedule() {
    let (double, url) = double().await;
    let sender = sender(&url, BusAuth::Sas { key_name: "k".into(), key: Secret::new("x") });
    let notify = Envelope::for_command(&MigrationId("m".into()), 9, 1, Command::Notify { status: "Completed".into(), message: "done".into() });
    sender.publish(&[envelope(), notify]).await.unwrap();
    let requests = double.requests.lock().unwrap().clone();
    assert_eq!(requests.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/milink-migration/messages", "/milink-notify/messages"]);
    let broker: Value = serde_json::from_str(requests[1].headers["brokerproperties"].to_str().unwrap()).unwrap();
    assert_eq!(broker, json!({ "MessageId": "m:notify:9:1", "SessionId": "m:notify" }), "notifications have their own session");
}

#[tokio::test]
async fn failures_are_classified_for_the_caller() {
    let (double, url) = double().await;
    let sender = sender(&url, BusAuth::Sas { key_name: "k".into(), key: Secret::new("x") });
    let message = BusMessage::for_envelope(&envelope(), "milink-");
    for (status, transient) in [(401, false), (403, false), (410, false), (429, true), (500, true), (503, true)] {
        *double.answer.lock().unwrap() = Some(status);
        let error = sender.send(&message).await.unwrap_err();
        assert_eq!(matches!(error, SendError::Transient(_)), transient, "HTTP {status}: {error}");
    }
    let closed = self::sender("http://127.0.0.1:9", BusAuth::Sas { key_name: "k".into(), key: Secret::new("x") });
    assert!(matches!(closed.send(&message).await, Err(SendError::Transient(_))), "unreachable is transient");
}

#[derive(Debug)]
struct FixedToken(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        self.0.lock().unwrap().extend(scopes.iter().map(|s| s.to_string()));
        Ok(azure_core::credentials::AccessToken::new(
            "token-123",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn entra_tokens_are_sent_as_bearer_for_the_service_bus_scope() {
    let (double, url) = double().await;
    let credential = Arc::new(FixedToken(Mutex::default()));
    sender(&url, BusAuth::Token(credential.clone())).send(&BusMessage::for_envelope(&envelope(), "milink-")).await.unwrap();
    assert_eq!(double.requests.lock().unwrap()[0].headers["authorization"], "Bearer token-123");
    assert_eq!(*credential.0.lock().unwrap(), ["https://servicebus.azure.net/.default"]);
}

/// The App Service identity endpoint (what a Function App has): GET with `X-IDENTITY-HEADER`,
/// `api-version=2019-08-01`, `resource`, and the user-assigned identity's `client_id`.
async fn identity_endpoint(headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Result<Json<Value>, StatusCode> {
    let expected = [("api-version", "2019-08-01"), ("resource", "https://servicebus.azure.net"), ("client_id", "uami-client")];
    let ok = headers.get("x-identity-header").is_some_and(|v| v == "identity-secret")
        && expected.iter().all(|(k, v)| query.get(*k).map(String::as_str) == Some(*v));
    if !ok {
        return Err(StatusCode::BAD_REQUEST);
    }
    let expires = (chrono::Utc::now().timestamp() + 3600).to_string();
    Ok(Json(json!({ "access_token": "mi-token", "expires_on": expires, "resource": "https://servicebus.azure.net", "token_type": "Bearer" })))
}

#[tokio::test]
async fn the_managed_identity_credential_gets_its_token_through_our_http_client() {
    let identity = serve(Router::new().route("/msi/token", get(identity_endpoint))).await;
    // Each nextest test runs in its own process, so these variables reach only this test.
    std::env::set_var("IDENTITY_ENDPOINT", format!("{identity}/msi/token"));
    std::env::set_var("IDENTITY_HEADER", "identity-secret");
    let credential = milink_azure::auth::managed_identity(Some("uami-client"), reqwest::Client::new()).unwrap();
    let (double, url) = double().await;
    sender(&url, BusAuth::Token(credential)).send(&BusMessage::for_envelope(&envelope(), "milink-")).await.unwrap();
    assert_eq!(double.requests.lock().unwrap()[0].headers["authorization"], "Bearer mi-token");
}
