//! The ARM contract server: a local HTTP server that answers like Azure Resource Manager does for the MI
//! link resources, with Microsoft's example responses (shared/specs/examples), long-running operations
//! (`201`/`202` with `Azure-AsyncOperation` and `Location`, `Retry-After`), and the documented error bodies
//! (`409 RemoteDatabaseExists`, `400 InvalidDistributedAvailabilityGroupFailoverInstanceRole`, 404, 401).
//! It validates every request body against the 2025-01-01 definitions and records every request, so tests
//! can assert on what the real client sent. The managed instance resource itself has no example in the
//! specs; its body is built here from the properties of `ManagedInstances.2025-01-01` (named as such).
use super::spec::{read_json, Mode, Spec};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// The bearer token the server accepts.
pub const TOKEN: &str = "contract-test-token";
/// Subscription of the example instance.
pub const SUBSCRIPTION: &str = "00000000-1111-2222-3333-444444444444";
/// The example instance.
pub const INSTANCE: &str = "testcl";
/// Its FQDN.
pub const FQDN: &str = "testcl.abc123def456.database.windows.net";

/// The resource id of the example instance.
pub fn instance_id() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/testrg/providers/Microsoft.Sql/managedInstances/{INSTANCE}")
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Body.
    pub body: Option<Value>,
    /// The bearer token was right.
    pub authorized: bool,
}

#[derive(Debug, Clone)]
struct Operation {
    in_progress_polls: u32,
    failure: Option<(String, String)>,
    result: Option<Value>,
    done: Done,
}

#[derive(Debug, Clone)]
enum Done {
    Nothing,
    RemoveDag(String),
    RemoveDatabase(String),
}

/// What the server knows and has seen.
#[derive(Debug, Default)]
pub struct ServerState {
    /// Every request.
    pub requests: Vec<Recorded>,
    /// Links by name: their properties.
    pub dags: BTreeMap<String, Value>,
    /// Server trust certificates: name → blob (upper-case hex without `0x`, as the service returns it).
    pub trust_certificates: BTreeMap<String, String>,
    /// Items per page of a list (`nextLink` carries a `$skiptoken` to the rest), as ARM pages.
    pub page_size: usize,
    /// Databases on the instance.
    pub databases: BTreeSet<String>,
    /// Body validation errors (should stay empty).
    pub invalid_bodies: Vec<String>,
    /// The next long-running operation ends Failed with this code and message.
    pub fail_next_operation: Option<(String, String)>,
    /// `databaseFormat` of the instance.
    pub database_format: String,
    /// Replication lag fields and LSNs the GET of a link returns (overrides of the example).
    pub link_database_overrides: Value,
    operations: HashMap<String, Operation>,
    next_operation: u64,
}

struct App {
    state: Mutex<ServerState>,
    base: String,
    spec: Spec,
    get_example: Value,
    failover_example: Value,
    set_role_example: Value,
    create_example: Value,
    endpoint_certificate_example: Value,
    trust_get_example: Value,
}

/// A running contract server.
pub struct ContractServer {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    app: Arc<App>,
}

impl ContractServer {
    /// Starts a server on a free local port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let example = |name: &str| read_json(&format!("examples/2025-08-01-preview/{name}"));
        let app = Arc::new(App {
            state: Mutex::new(ServerState { database_format: "SQLServer2022".into(), link_database_overrides: json!({}), page_size: 2, ..ServerState::default() }),
            base: base_url.clone(),
            spec: Spec::load("DistributedAvailabilityGroups.2025-01-01.definitions-excerpt.json"),
            get_example: example("DistributedAvailabilityGroupsGet.json")["responses"]["200"]["body"].clone(),
            failover_example: example("DistributedAvailabilityGroupsFailover.json")["responses"]["200"]["body"].clone(),
            set_role_example: example("DistributedAvailabilityGroupsSetRole.json")["responses"]["200"]["body"].clone(),
            create_example: example("DistributedAvailabilityGroupsCreateMin.json")["responses"]["201"]["body"].clone(),
            endpoint_certificate_example: example("EndpointCertificatesGet.json")["responses"]["200"]["body"].clone(),
            trust_get_example: example("ServerTrustCertificatesGet.json")["responses"]["200"]["body"].clone(),
        });
        let router = Router::new().fallback(handle).with_state(app.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
        Self { base_url, app }
    }

    /// Inspects or changes the server's state.
    pub fn state(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.app.state.lock().unwrap()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, [("content-type", "application/json")], json!({ "error": { "code": code, "message": message } }).to_string()).into_response()
}

fn ok_json(status: StatusCode, body: &Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let authorized = request.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"));
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap_or_default();
    let body: Option<Value> = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
    app.state.lock().unwrap().requests.push(Recorded { method: method.to_string(), path: path.clone(), query: query.clone(), body: body.clone(), authorized });
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", "The access token is invalid.");
    }
    let mut skip = 0usize;
    let mut api_version = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("api-version", value)) => api_version = Some(value),
            Some(("$skiptoken" | "%24skiptoken", value)) => skip = value.parse().unwrap_or(0),
            _ => return error(StatusCode::BAD_REQUEST, "InvalidQueryParameter", &format!("Unexpected query parameter in {query:?}.")),
        }
    }
    if api_version != Some("2025-01-01") {
        return error(StatusCode::BAD_REQUEST, "InvalidApiVersionParameter", &format!("The api-version in {query:?} is not the one this contract serves (2025-01-01)."));
    }
    let location_prefix = format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Sql/locations/westus/");
    if let Some(rest) = path.strip_prefix(&location_prefix) {
        return poll(&app, rest);
    }
    let Some(rest) = path.strip_prefix(&instance_id()) else {
        return error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("The Resource '{path}' was not found."));
    };
    let segments: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, []) => ok_json(StatusCode::OK, &instance_body(&app)),
        (&Method::GET, ["distributedAvailabilityGroups"]) => {
            let state = app.state.lock().unwrap();
            let value: Vec<Value> = state.dags.keys().map(|name| dag_body(&app, &state, name)).collect();
            page(&app, &state, &path, value, skip)
        }
        (&Method::GET, ["serverTrustCertificates"]) => {
            let state = app.state.lock().unwrap();
            let value: Vec<Value> = state.trust_certificates.iter().map(|(name, blob)| trust_body(&app, name, blob)).collect();
            page(&app, &state, &path, value, skip)
        }
        (&Method::GET, ["distributedAvailabilityGroups", name]) => {
            let state = app.state.lock().unwrap();
            if state.dags.contains_key(*name) {
                ok_json(StatusCode::OK, &dag_body(&app, &state, name))
            } else {
                not_found("Microsoft.Sql/managedInstances/distributedAvailabilityGroups", name)
            }
        }
        (&Method::PUT, ["distributedAvailabilityGroups", name]) => create_dag(&app, name, body),
        (&Method::PATCH, ["distributedAvailabilityGroups", name]) => {
            if let Err(response) = validate(&app, "DistributedAvailabilityGroup", &body) {
                return *response;
            }
            let mut state = app.state.lock().unwrap();
            let Some(stored) = state.dags.get_mut(*name) else { return not_found("Microsoft.Sql/managedInstances/distributedAvailabilityGroups", name) };
            if let Some(mode) = body.as_ref().and_then(|b| b["properties"].get("replicationMode")) {
                stored["replicationMode"] = mode.clone();
            }
            let result = dag_body(&app, &state, name);
            accepted_with_location(&app, &mut state, Operation { in_progress_polls: 1, failure: None, result: Some(result), done: Done::Nothing }, false)
        }
        (&Method::POST, ["distributedAvailabilityGroups", name, "failover"]) => {
            if let Err(response) = validate(&app, "DistributedAvailabilityGroupsFailoverRequest", &body) {
                return *response;
            }
            let mut state = app.state.lock().unwrap();
            let Some(stored) = state.dags.get(*name) else { return not_found("Microsoft.Sql/managedInstances/distributedAvailabilityGroups", name) };
            let planned = body.as_ref().and_then(|b| b.get("failoverType")).and_then(Value::as_str) == Some("Planned");
            if planned && stored["instanceLinkRole"] == "Secondary" {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidDistributedAvailabilityGroupFailoverInstanceRole",
                    "Planned failover can be executed on a link in the primary role only. Current state of the specified link is secondary.",
                );
            }
            let result = app.failover_example.clone();
            accepted_with_location(&app, &mut state, Operation { in_progress_polls: 1, failure: None, result: Some(result), done: Done::Nothing }, false)
        }
        (&Method::POST, ["distributedAvailabilityGroups", name, "setRole"]) => {
            if let Err(response) = validate(&app, "DistributedAvailabilityGroupSetRole", &body) {
                return *response;
            }
            let mut state = app.state.lock().unwrap();
            let role = body.as_ref().and_then(|b| b.get("instanceRole")).cloned().unwrap_or(Value::Null);
            let Some(stored) = state.dags.get_mut(*name) else { return not_found("Microsoft.Sql/managedInstances/distributedAvailabilityGroups", name) };
            stored["instanceLinkRole"] = role;
            let result = app.set_role_example.clone();
            accepted_with_location(&app, &mut state, Operation { in_progress_polls: 1, failure: None, result: Some(result), done: Done::Nothing }, false)
        }
        (&Method::DELETE, ["distributedAvailabilityGroups", name]) => {
            let mut state = app.state.lock().unwrap();
            if !state.dags.contains_key(*name) {
                return StatusCode::NO_CONTENT.into_response();
            }
            accepted_with_location(&app, &mut state, Operation { in_progress_polls: 1, failure: None, result: None, done: Done::RemoveDag((*name).to_owned()) }, false)
        }
        (&Method::GET, ["serverTrustCertificates", name]) => {
            let state = app.state.lock().unwrap();
            match state.trust_certificates.get(*name) {
                None => not_found("Microsoft.Sql/managedInstances/serverTrustCertificates", name),
                Some(blob) => ok_json(StatusCode::OK, &trust_body(&app, name, blob)),
            }
        }
        (&Method::PUT, ["serverTrustCertificates", name]) => {
            let spec = Spec::load("ServerTrustCertificates.2025-01-01.definitions-excerpt.json");
            if let Err(errors) = spec.validate("ServerTrustCertificate", body.as_ref().unwrap_or(&Value::Null), Mode::Request) {
                app.state.lock().unwrap().invalid_bodies.extend(errors.clone());
                return error(StatusCode::BAD_REQUEST, "InvalidRequestContent", &errors.join("; "));
            }
            let mut state = app.state.lock().unwrap();
            let sent = body.as_ref().and_then(|b| b["properties"]["publicBlob"].as_str()).unwrap_or("").to_owned();
            // Modeled on Microsoft's clients: New-AzSqlInstanceServerTrustCertificate only accepts
            // ^0x[0-9a-fA-F]+$ and passes it unchanged; the service's own error for anything else is not
            // documented, so this double refuses it with a plain 400.
            let Some(hex) = sent.strip_prefix("0x").filter(|h| !h.is_empty() && h.len() % 2 == 0 && h.bytes().all(|b| b.is_ascii_hexdigit())) else {
                return error(StatusCode::BAD_REQUEST, "InvalidPublicBlob", &format!("publicBlob must be the certificate as 0x followed by hex digits; got {:?}.", sent.chars().take(12).collect::<String>()));
            };
            let blob = hex.to_ascii_uppercase();
            // The MI keeps one copy of a certificate: a second upload under another name is refused the way SQL
            // Server refuses it (error 15232); the ARM code for it is not documented.
            if let Some(other) = state.trust_certificates.iter().find(|(other, stored)| other.as_str() != *name && **stored == blob).map(|(other, _)| other.clone()) {
                return error(StatusCode::CONFLICT, "ServerTrustCertificateAlreadyExists", &format!("A certificate with name '{other}' already exists or this certificate already has been added to the database."));
            }
            state.trust_certificates.insert((*name).to_owned(), blob);
            let mut result = app.trust_get_example.clone();
            result["name"] = json!(name);
            accepted_with_location(&app, &mut state, Operation { in_progress_polls: 0, failure: None, result: Some(result), done: Done::Nothing }, false)
        }
        (&Method::DELETE, ["serverTrustCertificates", name]) => {
            let removed = app.state.lock().unwrap().trust_certificates.remove(*name).is_some();
            if removed { StatusCode::OK.into_response() } else { StatusCode::NO_CONTENT.into_response() }
        }
        (&Method::GET, ["endpointCertificates", "DATABASE_MIRRORING"]) => ok_json(StatusCode::OK, &app.endpoint_certificate_example),
        (&Method::GET, ["databases", name]) => {
            if app.state.lock().unwrap().databases.contains(*name) {
                ok_json(StatusCode::OK, &json!({ "name": name, "type": "Microsoft.Sql/managedInstances/databases", "properties": { "status": "Online" } }))
            } else {
                not_found("Microsoft.Sql/managedInstances/databases", name)
            }
        }
        (&Method::DELETE, ["databases", name]) => {
            let mut state = app.state.lock().unwrap();
            if !state.databases.contains(*name) {
                return StatusCode::NO_CONTENT.into_response();
            }
            accepted_with_location(&app, &mut state, Operation { in_progress_polls: 1, failure: None, result: None, done: Done::RemoveDatabase((*name).to_owned()) }, false)
        }
        _ => error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("No route for {method} {path} in the contract server.")),
    }
}

/// One page of a list and, when more remain, a `nextLink` back to this server with a `$skiptoken`.
fn page(app: &App, state: &ServerState, path: &str, items: Vec<Value>, skip: usize) -> Response {
    let size = state.page_size.max(1);
    let value: Vec<Value> = items.iter().skip(skip).take(size).cloned().collect();
    let mut body = json!({ "value": value });
    if skip + size < items.len() {
        body["nextLink"] = json!(format!("{}{path}?api-version=2025-01-01&$skiptoken={}", app.base, skip + size));
    }
    ok_json(StatusCode::OK, &body)
}

/// A server trust certificate as the service returns it: bare upper-case hex, and a thumbprint (here the
/// tests' stand-in, [`super::fake_thumbprint`], which the FAKE SQL Server reports for the same blob).
fn trust_body(app: &App, name: &str, blob: &str) -> Value {
    let mut body = app.trust_get_example.clone();
    body["name"] = json!(name);
    body["id"] = json!(format!("{}/serverTrustCertificates/{name}", instance_id()));
    body["properties"]["publicBlob"] = json!(blob);
    body["properties"]["thumbprint"] = json!(super::fake_thumbprint(blob));
    body["properties"]["certificateName"] = json!(name);
    body
}

fn not_found(kind: &str, name: &str) -> Response {
    error(StatusCode::NOT_FOUND, "ResourceNotFound", &format!("The requested resource of type '{kind}' with name '{name}' was not found."))
}

fn validate(app: &App, definition: &str, body: &Option<Value>) -> Result<(), Box<Response>> {
    app.spec.validate(definition, body.as_ref().unwrap_or(&Value::Null), Mode::Request).map_err(|errors| {
        app.state.lock().unwrap().invalid_bodies.extend(errors.clone());
        Box::new(error(StatusCode::BAD_REQUEST, "InvalidRequestContent", &errors.join("; ")))
    })
}

fn create_dag(app: &App, name: &str, body: Option<Value>) -> Response {
    if let Err(response) = validate(app, "DistributedAvailabilityGroup", &body) {
        return *response;
    }
    let mut state = app.state.lock().unwrap();
    let properties = body.map(|b| b["properties"].clone()).unwrap_or(Value::Null);
    let database = properties["databases"][0]["databaseName"].as_str().unwrap_or("").to_owned();
    if state.databases.contains(&database) {
        return error(StatusCode::CONFLICT, "RemoteDatabaseExists", "The destination database name already exists on the destination server.");
    }
    let mut stored = properties.clone();
    for (key, default) in [("instanceLinkRole", "Secondary"), ("failoverMode", "None"), ("seedingMode", "Automatic"), ("replicationMode", "Async")] {
        if stored.get(key).is_none() {
            stored[key] = json!(default);
        }
    }
    state.dags.insert(name.to_owned(), stored);
    state.databases.insert(database);
    let mut initial = app.create_example.clone();
    initial["name"] = json!(name);
    let failure = state.fail_next_operation.take();
    let done = if failure.is_some() { Done::RemoveDag(name.to_owned()) } else { Done::Nothing };
    let response = accepted_with_location(app, &mut state, Operation { in_progress_polls: 1, failure, result: None, done }, true);
    let (mut parts, _) = response.into_parts();
    parts.status = StatusCode::CREATED;
    Response::from_parts(parts, Body::from(initial.to_string()))
}

/// Registers an operation and answers 202 with `Location` (and `Azure-AsyncOperation` when `async_header`).
fn accepted_with_location(app: &App, state: &mut ServerState, operation: Operation, async_header: bool) -> Response {
    state.next_operation += 1;
    let id = format!("00000000-0000-0000-0000-{:012}", state.next_operation);
    state.operations.insert(id.clone(), operation);
    let base = format!("{}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Sql/locations/westus", app.base);
    let mut headers = HeaderMap::new();
    headers.insert("location", HeaderValue::from_str(&format!("{base}/distributedAvailabilityGroupsOperationResults/{id}?api-version=2025-01-01")).unwrap());
    if async_header {
        headers.insert("azure-asyncoperation", HeaderValue::from_str(&format!("{base}/distributedAvailabilityGroupsAzureAsyncOperation/{id}?api-version=2025-01-01")).unwrap());
    }
    headers.insert("retry-after", HeaderValue::from_static("0"));
    (StatusCode::ACCEPTED, headers).into_response()
}

fn finish(state: &mut ServerState, done: &Done) {
    match done {
        Done::Nothing => {}
        Done::RemoveDag(name) => {
            state.dags.remove(name);
        }
        Done::RemoveDatabase(name) => {
            state.databases.remove(name);
        }
    }
}

fn poll(app: &App, rest: &str) -> Response {
    let (kind, id) = rest.split_once('/').unwrap_or((rest, ""));
    let mut state = app.state.lock().unwrap();
    let Some(operation) = state.operations.get_mut(id) else { return error(StatusCode::NOT_FOUND, "OperationNotFound", "No such operation.") };
    let still_running = operation.in_progress_polls > 0;
    if still_running {
        operation.in_progress_polls -= 1;
    }
    let operation = operation.clone();
    let retry = [("retry-after", "0")];
    if kind.ends_with("AzureAsyncOperation") {
        if still_running {
            return (StatusCode::OK, retry, json!({ "name": id, "status": "InProgress" }).to_string()).into_response();
        }
        finish(&mut state, &operation.done);
        return match &operation.failure {
            None => ok_json(StatusCode::OK, &json!({ "name": id, "status": "Succeeded" })),
            Some((code, message)) => ok_json(StatusCode::OK, &json!({ "name": id, "status": "Failed", "error": { "code": code, "message": message } })),
        };
    }
    if still_running {
        return (StatusCode::ACCEPTED, retry).into_response();
    }
    finish(&mut state, &operation.done);
    match (&operation.failure, &operation.result) {
        (Some((code, message)), _) => error(StatusCode::BAD_REQUEST, code, message),
        (None, Some(result)) => ok_json(StatusCode::OK, result),
        (None, None) => StatusCode::NO_CONTENT.into_response(),
    }
}

fn dag_body(app: &App, state: &ServerState, name: &str) -> Value {
    let mut body = app.get_example.clone();
    body["name"] = json!(name);
    body["id"] = json!(format!("{}/distributedAvailabilityGroups/{name}", instance_id()));
    body["properties"]["distributedAvailabilityGroupName"] = json!(name);
    if let Some(stored) = state.dags.get(name).and_then(Value::as_object) {
        for (key, value) in stored {
            if key != "databases" {
                body["properties"][key] = value.clone();
            }
        }
        body["properties"]["databases"][0]["databaseName"] = stored.get("databases").map(|d| d[0]["databaseName"].clone()).unwrap_or(Value::Null);
    }
    if let Some(overrides) = state.link_database_overrides.as_object() {
        for (key, value) in overrides {
            body["properties"]["databases"][0][key] = value.clone();
        }
    }
    body
}

fn instance_body(app: &App) -> Value {
    let state = app.state.lock().unwrap();
    json!({
        "id": instance_id(),
        "name": INSTANCE,
        "type": "Microsoft.Sql/managedInstances",
        "location": "westus",
        "sku": { "name": "GP_Gen5", "tier": "GeneralPurpose", "family": "Gen5", "capacity": 8 },
        "properties": {
            "provisioningState": "Succeeded",
            "fullyQualifiedDomainName": FQDN,
            "dnsZone": "abc123def456",
            "state": "Ready",
            "licenseType": "LicenseIncluded",
            "collation": "SQL_Latin1_General_CP1_CI_AS",
            "vCores": 8,
            "storageSizeInGB": 1024,
            "databaseFormat": state.database_format,
            "hybridSecondaryUsage": "Active"
        }
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
