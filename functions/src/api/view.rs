//! The JSON shape of a migration in API responses (camelCase, status strings as documented).
use milink_core::migration::Migration;
use serde_json::{json, Value};

/// A migration as `GET /api/migrations` lists it.
pub fn summary(m: &Migration) -> Value {
    let observation = m.observation.as_ref();
    json!({
        "id": m.id,
        "source": m.source,
        "target": m.target,
        "database": m.database,
        "status": m.status().as_str(),
        "step": m.step(),
        "progress": observation.map(|o| (o.progress_percent * 10.0).round() / 10.0),
        "seed": observation.and_then(|o| o.seed.as_ref()),
        "lagBytes": observation.and_then(|o| o.lag_bytes),
        "lagSeconds": observation.and_then(|o| o.lag_seconds),
        "reason": m.reason(),
        "errorCode": m.failure.as_ref().map(|f| f.code.clone()),
        "remediation": m.remediation(),
        "fleet": m.fleet.as_ref().map(|f| json!({ "plan": f.plan, "wave": f.wave_name, "waveNumber": f.wave })),
        "createdAt": m.created_at,
        "updatedAt": m.updated_at,
    })
}

/// A migration with its settings, cutover record and history.
pub fn detail(m: &Migration) -> Value {
    let mut value = summary(m);
    value["settings"] = serde_json::to_value(&m.settings).unwrap_or(Value::Null);
    value["cutover"] = json!({
        "attempt": m.cutover.attempt,
        "requestedAt": m.cutover.requested_at,
        "fencedAt": m.cutover.fenced_at,
        "fencePosition": m.cutover.fence_position.map(|p| p.0),
        "drainedPosition": m.cutover.drained_position.map(|p| p.0),
        "switchedAt": m.cutover.switched_at,
        "writeDowntimeMs": m.cutover.write_downtime_ms(),
        "verification": m.cutover.verification,
        "abandonedReason": m.cutover.abandoned_reason,
        "steps": m.cutover.steps,
        "failbackSteps": m.cutover.failback_steps,
        "reverseLink": (m.settings.keep_reverse_link && m.cutover.switched_at.is_some()).then_some(m.cutover.reverse_link),
    });
    value["verification"] = json!({
        "running": m.verify.running.is_some(),
        "requestedAt": m.verify.requested_at,
        "last": m.verify.last,
        "lastError": m.verify.last_error,
    });
    if let Some(observation) = &m.observation {
        value["schemaChanges"] = serde_json::to_value(&observation.drift).unwrap_or(Value::Null);
    }
    value["history"] = serde_json::to_value(&m.history).unwrap_or(Value::Null);
    value
}
