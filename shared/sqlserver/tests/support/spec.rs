//! Validates JSON against the OpenAPI (Swagger 2.0) definitions in `shared/specs`.
//!
//! Only the subset those files use: `$ref` (local, plus the common `ProxyResource` the files point at but do
//! not include), `allOf`, `properties`, `required`, `type`, `enum`, `format` (uuid, date-time, int32), `items`
//! and `readOnly`. Stricter than ARM in one way on purpose: a property the definition does not name is an
//! error, so a misspelt field (`PartnerEndpoint`) fails here instead of being silently ignored by Azure.
//! In request mode a `readOnly` property is an error too (a client must not send server-computed fields).
use serde_json::{json, Value};
use std::path::PathBuf;

/// Where the shared specs live, relative to this crate.
pub fn specs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs")
}

/// Reads a JSON file under `shared/specs`.
pub fn read_json(relative: &str) -> Value {
    let path = specs_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A body milink sends: readOnly properties are refused.
    Request,
    /// A body the service returns.
    Response,
}

/// The definitions of one spec file.
pub struct Spec {
    definitions: Value,
}

fn proxy_resource() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": { "type": "string", "readOnly": true },
            "name": { "type": "string", "readOnly": true },
            "type": { "type": "string", "readOnly": true },
            "systemData": { "type": "object", "readOnly": true }
        }
    })
}

impl Spec {
    /// Loads `shared/specs/<file>`.
    pub fn load(file: &str) -> Self {
        let document = read_json(file);
        Self { definitions: document["definitions"].clone() }
    }

    /// Validates `value` against definition `name`.
    pub fn validate(&self, name: &str, value: &Value, mode: Mode) -> Result<(), Vec<String>> {
        let schema = self.definitions.get(name).unwrap_or_else(|| panic!("no definition {name}")).clone();
        let mut errors = Vec::new();
        self.check(&schema, value, "$", mode, &mut errors);
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn resolve(&self, schema: &Value) -> Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) if reference.starts_with("#/definitions/") => {
                let name = &reference["#/definitions/".len()..];
                let mut resolved = self.resolve(&self.definitions[name]);
                // Keywords next to the $ref (readOnly, description) apply too.
                if let (Some(target), Some(extra)) = (resolved.as_object_mut(), schema.as_object()) {
                    for (key, value) in extra {
                        if key != "$ref" {
                            target.insert(key.clone(), value.clone());
                        }
                    }
                }
                resolved
            }
            Some(reference) if reference.ends_with("#/definitions/ProxyResource") => proxy_resource(),
            Some(reference) => panic!("unsupported $ref {reference}"),
            None => schema.clone(),
        }
    }

    fn properties(&self, schema: &Value) -> serde_json::Map<String, Value> {
        let mut properties = schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        for part in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            properties.extend(self.properties(&self.resolve(part)));
        }
        properties
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, mode: Mode, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let kind = schema.get("type").and_then(Value::as_str).unwrap_or(if schema.get("properties").is_some() || schema.get("allOf").is_some() { "object" } else { "any" });
        match (kind, value) {
            ("object", Value::Object(map)) => {
                let properties = self.properties(&schema);
                for required in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                    if !map.contains_key(required) {
                        errors.push(format!("{path}: missing required property {required}"));
                    }
                }
                for (key, item) in map {
                    match properties.get(key) {
                        None => errors.push(format!("{path}: property {key} is not in the definition")),
                        Some(property) => {
                            let property = self.resolve(property);
                            if mode == Mode::Request && property.get("readOnly") == Some(&Value::Bool(true)) {
                                errors.push(format!("{path}.{key}: read-only property must not be sent"));
                            }
                            self.check(&property, item, &format!("{path}.{key}"), mode, errors);
                        }
                    }
                }
            }
            ("array", Value::Array(items)) => {
                let item_schema = schema.get("items").cloned().unwrap_or(json!({}));
                for (i, item) in items.iter().enumerate() {
                    self.check(&item_schema, item, &format!("{path}[{i}]"), mode, errors);
                }
            }
            ("string", Value::String(text)) => {
                if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
                    if !allowed.iter().any(|a| a.as_str() == Some(text)) {
                        errors.push(format!("{path}: {text:?} is not one of {allowed:?}"));
                    }
                }
                match schema.get("format").and_then(Value::as_str) {
                    Some("uuid") if !is_uuid(text) => errors.push(format!("{path}: {text:?} is not a uuid")),
                    Some("date-time") if !is_date_time(text) => errors.push(format!("{path}: {text:?} is not a date-time")),
                    _ => {}
                }
            }
            ("integer", Value::Number(n)) => {
                if n.as_i64().is_none() {
                    errors.push(format!("{path}: {n} is not an integer"));
                } else if schema.get("format").and_then(Value::as_str) == Some("int32") && i32::try_from(n.as_i64().unwrap()).is_err() {
                    errors.push(format!("{path}: {n} is out of int32 range"));
                }
            }
            ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) | ("any", _) => {}
            (expected, other) => errors.push(format!("{path}: expected {expected}, got {other}")),
        }
    }
}

fn is_uuid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(len, part)| part.len() == *len && part.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_date_time(text: &str) -> bool {
    text.len() >= 20 && text.as_bytes()[4] == b'-' && text.as_bytes()[10] == b'T' && (text.ends_with('Z') || text.contains('+'))
}
