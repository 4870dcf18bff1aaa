//! Notify: every notification is logged; when `[notify] webhook_url` is set it is also POSTed as JSON,
//! with a `notificationId` that stays the same across redeliveries, so a receiver can drop duplicates.
//! A webhook that is down is retried like any transient step, on its own ordering key, so it never
//! holds up a migration.
use super::Retry;
use crate::context::Context;
use milink_core::error::EngineError;
use milink_core::migration::Migration;
use serde_json::json;

/// Notifies about a migration.
pub async fn migration(ctx: &Context, notification_id: &str, migration: &Migration, status: &str, message: &str) -> Result<(), Retry> {
    tracing::info!(target: "milink::notify", migration = %migration.id, database = %migration.database, status, "{message}");
    post(
        ctx,
        json!({
            "kind": "migration",
            "notificationId": notification_id,
            "migrationId": migration.id,
            "source": migration.source,
            "target": migration.target,
            "database": migration.database,
            "status": status,
            "message": message,
            "at": ctx.clock.now(),
        }),
    )
    .await
}

/// Notifies that an assessment finished.
pub async fn assessment_completed(ctx: &Context, notification_id: &str, assessment_id: &str, message: &str) -> Result<(), Retry> {
    tracing::info!(target: "milink::notify", assessment = assessment_id, "{message}");
    post(ctx, json!({ "kind": "assessment", "notificationId": notification_id, "assessmentId": assessment_id, "message": message, "at": ctx.clock.now() }))
        .await
}

async fn post(ctx: &Context, body: serde_json::Value) -> Result<(), Retry> {
    let Some(url) = &ctx.config.notify.webhook_url else { return Ok(()) };
    let unavailable = |detail: String| {
        Retry(EngineError::transient(
            "webhook_unavailable",
            format!("notification webhook failed: {detail}"),
            "check [notify] webhook_url in milink.toml and that the receiver is up",
        ))
    };
    let response = ctx.http.post(url).json(&body).send().await.map_err(|e| unavailable(e.without_url().to_string()))?;
    if !response.status().is_success() {
        return Err(unavailable(format!("HTTP {}", response.status())));
    }
    Ok(())
}
