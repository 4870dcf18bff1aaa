//! The Function App layout: host.json and every function.json are valid against SchemaStore's schemas
//! (../shared/schemas), every function folder matches the handler's catalog, and every API route has an
//! HTTP function. `MILINK_BLESS_LAYOUT=1` rewrites the function.json files from the catalog.
//!
//! function.json is validated with draft-07 semantics although the schema declares draft-04: it uses
//! `const` (a draft-06 keyword) in its `sqlBinding` and `mySqlBinding` branches, which draft-04 ignores,
//! so under strict draft-04 those branches match every binding and the `oneOf` over binding kinds fails
//! for *any* function, even a plain timer. Editors (VS Code's JSON service) honour `const` whatever the
//! draft; so do we. [`strict_draft_04_rejects_even_a_plain_timer`] pins the schema's behaviour, so a fixed
//! schema is noticed and this workaround removed.
use milink_functions::azure::catalog::{self, Trigger, FUNCTIONS};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn schemas() -> PathBuf {
    let candidates = [repo().join("../shared/schemas"), PathBuf::from("/work/shared/schemas")];
    candidates.into_iter().find(|p| p.join("host.json").exists()).expect("the shared schemas (../shared/schemas) are present")
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(schema_file: &str) -> jsonschema::Validator {
    let schema = read(&schemas().join(schema_file));
    let built = match schema_file {
        "function.json" => jsonschema::options().with_draft(jsonschema::Draft::Draft7).build(&schema),
        _ => jsonschema::validator_for(&schema),
    };
    built.unwrap_or_else(|e| panic!("schema {schema_file}: {e}"))
}

fn assert_valid(schema_file: &str, instance: &Value, what: &str) {
    let validator = validator(schema_file);
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} is invalid against {schema_file}:\n{}", errors.join("\n"));
}

#[test]
fn host_json_is_valid_and_runs_the_milink_binary_as_custom_handler() {
    let host = read(&repo().join("host.json"));
    assert_valid("host.json", &host, "host.json");
    assert_eq!(host["version"], "2.0");
    let handler = &host["customHandler"];
    assert_eq!(handler["description"]["defaultExecutablePath"], "milink", "package-functions.sh ships the binary as `milink`");
    assert_eq!(handler["description"]["arguments"], serde_json::json!(["functions"]));
    assert_eq!(handler["enableForwardingHttpRequest"], false, "the legacy forwarding drops chunked bodies too (ToHttpRequestMessage)");
    // Issue 15, Azure item 6: in the Data/Metadata protocol the host drops the body of a chunked request;
    // proxied, the request reaches the handler as it came.
    assert_eq!(handler["enableProxyingHttpRequest"], true, "HTTP functions are proxied, so a chunked body arrives");
    assert_eq!(host["extensions"]["http"]["routePrefix"], "api", "the API's routes live under /api");
    // A step may run as long as the function timeout; the session lock must be renewed that long, or
    // Service Bus hands the message to another instance while the first still runs it.
    assert_eq!(host["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"], host["functionTimeout"]);
}

#[test]
fn a_deliberately_broken_host_json_is_caught() {
    let mut host = read(&repo().join("host.json"));
    host["functionTimeout"] = Value::String("1.00:00:00".into());
    assert!(!validator("host.json").is_valid(&host), "the validator must reject what Functions rejects");
    let mut function = catalog::function_json(&FUNCTIONS[0]);
    function["bindings"][0]["direction"] = Value::String("sideways".into());
    assert!(!validator("function.json").is_valid(&function));
}

#[test]
fn strict_draft_04_rejects_even_a_plain_timer() {
    let schema = read(&schemas().join("function.json"));
    let timer = catalog::function_json(catalog::find("Relay").unwrap());
    let strict = jsonschema::options().with_draft(jsonschema::Draft::Draft4).build(&schema).unwrap();
    assert!(
        !strict.is_valid(&timer),
        "SchemaStore's function.json now validates under its declared draft: drop the draft-07 override above"
    );
}

#[test]
fn every_function_folder_is_valid_and_matches_the_catalog() {
    let root = repo().join("functions");
    let bless = std::env::var("MILINK_BLESS_LAYOUT").is_ok();
    for function in FUNCTIONS {
        let expected = catalog::function_json(function);
        let path = root.join(function.name).join("function.json");
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(&expected).unwrap() + "\n").unwrap();
        }
        let actual = read(&path);
        assert_valid("function.json", &actual, &path.display().to_string());
        assert_eq!(actual, expected, "{} differs from the catalog; run with MILINK_BLESS_LAYOUT=1", path.display());
    }
    let folders: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("function.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for folder in &folders {
        assert!(catalog::find(folder).is_some(), "functions/{folder} has a function.json but no handler");
    }
    assert_eq!(folders.len(), FUNCTIONS.len());
}

#[test]
fn every_api_route_and_method_has_an_http_function() {
    let openapi: Value = serde_json::from_str(milink_functions::api::OPENAPI).unwrap();
    for (path, operations) in openapi["paths"].as_object().unwrap() {
        let route = path.strip_prefix("/api/").expect("API paths live under /api");
        for method in operations.as_object().unwrap().keys() {
            let served = FUNCTIONS.iter().any(|f| match f.trigger {
                Trigger::Http { route: r, methods, .. } => r == route && methods.contains(&method.as_str()),
                _ => false,
            });
            assert!(served, "{} {path} has no HTTP function", method.to_uppercase());
        }
    }
}

/// No Bicep compiler is reachable here (infra/check.sh says why), so at least the facts the handler
/// relies on are checked against infra/main.bicep: the queues it creates are the catalog's, with sessions,
/// duplicate detection and a delivery count; the app settings are the ones settings.rs reads.
#[test]
fn the_bicep_creates_what_the_handler_expects() {
    let bicep = std::fs::read_to_string(repo().join("infra/main.bicep")).unwrap();
    let line = |prefix: &str| bicep.lines().find(|l| l.trim_start().starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` in main.bicep")).to_owned();
    let stages: Vec<String> = FUNCTIONS
        .iter()
        .filter_map(|f| match f.trigger {
            Trigger::Queue { stage } => Some(format!("'{}'", stage.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(line("var stages"), format!("var stages = [{}]", stages.join(", ")));
    assert_eq!(line("var queuePrefix"), format!("var queuePrefix = '{}'", catalog::QUEUE_PREFIX));
    for property in ["requiresSession: true", "requiresDuplicateDetection: true", "duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow", "maxDeliveryCount: maxDeliveryCount"] {
        assert!(bicep.contains(property), "queues lack {property}");
    }
    for setting in [
        "FUNCTIONS_WORKER_RUNTIME', value: 'custom'",
        "MILINK_STORAGE_ACCOUNT",
        "MILINK_TABLE_ENDPOINT",
        "MILINK_SERVICEBUS_URL",
        "AZURE_CLIENT_ID",
        &format!("{}__fullyQualifiedNamespace", catalog::SERVICE_BUS_CONNECTION),
    ] {
        assert!(bicep.contains(setting), "app settings lack {setting}");
    }
    // Issue 15, Azure item 1: ARM evaluates a conditional module's scope too; an unguarded
    // split(targetManagedInstanceId, '/')[2] fails validation with the default ''.
    let scope = bicep.lines().find(|l| l.contains("scope:") && l.contains("targetManagedInstanceId")).expect("the MI role module's scope");
    assert!(
        scope.matches("split(targetManagedInstanceId").count() == scope.matches("empty(targetManagedInstanceId)?").count()
            + scope.matches("empty(targetManagedInstanceId) ?").count(),
        "every split of targetManagedInstanceId in the scope is guarded by empty(): {scope}"
    );
    let module = std::fs::read_to_string(repo().join("infra/modules/managed-instance-role.bicep")).unwrap();
    assert!(module.contains("4939a1f6-9ae0-4e48-a1e0-f2cbe897382d"), "SQL Managed Instance Contributor");
    assert!(module.contains("distributedAvailabilityGroups/setRole/action"), "the custom role of mi-link.md §1.3");
}
