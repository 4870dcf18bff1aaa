//! Alerts at run time: after every poll tick the pure [`milink_core::alerts::Tracker`] looks at the
//! active migrations, and each alert it returns is logged and POSTed as JSON to `[alerts] webhook_url`.
//!
//! What is raised is stored on each migration (`Event::AlertsChanged`) and a tracker meeting a migration
//! for the first time starts from it, so a restart of the embedded host, or the Azure poll timer moving to
//! another instance, does not raise a condition that still holds again. A failed webhook delivery is
//! logged (the URL's host only: its query may hold a key) and not retried; the log line is the record.
use crate::context::Context;
use crate::handlers::apply;
use milink_core::alerts::{Alert, Tracker};
use milink_core::flow::Event;
use milink_core::ports::MigrationFilter;
use std::sync::Mutex;

static TRACKER: Mutex<Option<Tracker>> = Mutex::new(None);

/// One look at every active migration; sends what the tracker raises or clears.
pub async fn run(ctx: &Context) {
    let migrations = match ctx.migrations.list(&MigrationFilter { active_only: true }).await {
        Ok(migrations) => migrations,
        Err(error) => {
            tracing::warn!(%error, "alerts: cannot list migrations");
            return;
        }
    };
    let (alerts, changed) = {
        let mut guard = TRACKER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tracker = guard.get_or_insert_with(Tracker::default);
        let alerts = tracker.check(&migrations, ctx.clock.now(), &ctx.config.alerts);
        let changed: Vec<_> =
            migrations.iter().map(|m| (m, tracker.raised_for(&m.id))).filter(|(m, raised)| *raised != m.alerts).map(|(m, r)| (m.id.clone(), r)).collect();
        (alerts, changed)
    };
    for alert in alerts {
        send(ctx, &alert).await;
    }
    for (id, raised) in changed {
        if let Err(error) = apply(ctx, &id, &Event::AlertsChanged { raised }).await {
            tracing::warn!(migration = %id, %error, "alerts: could not store what is raised (a restart may raise it again)");
        }
    }
}

async fn send(ctx: &Context, alert: &Alert) {
    let state = if alert.raised { "raised" } else { "cleared" };
    tracing::warn!(migration = %alert.migration_id, alert = ?alert.alert, state, "alert: {}", alert.message);
    let Some(url) = ctx.config.alerts.webhook_url.as_deref() else { return };
    let delivered = ctx.http.post(url).json(alert).send().await.and_then(reqwest::Response::error_for_status);
    if let Err(error) = delivered {
        tracing::warn!(webhook = %host_of(url), error = %error.without_url(), "alert webhook not delivered");
    }
}

/// The scheme and host of a URL, for logs: never its path or query (keys live there).
fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or("?")),
        Err(_) => "an unparsable url".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_logged_webhook_never_shows_its_path_or_query() {
        assert_eq!(super::host_of("https://hooks.example.com/services/T0/B0?code=s3cret"), "https://hooks.example.com");
    }
}
