//! Alerts at run time: after every poll tick the pure [`milink_core::alerts::Tracker`] looks at the
//! active migrations, and each alert it returns is logged and POSTed as JSON to `[alerts] webhook_url`.
//!
//! The tracker lives in this process's memory (deduplication per process): the embedded host polls in one
//! process; on Azure the poll timer runs as a singleton but not always on the same instance, so an alert
//! whose condition still holds can be raised again when the timer moves. A failed webhook delivery is
//! logged (the URL's host only: its query may hold a key) and not retried; the log line is the record.
use crate::context::Context;
use milink_core::alerts::{Alert, Tracker};
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
    let alerts = {
        let mut tracker = TRACKER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tracker.get_or_insert_with(Tracker::default).check(&migrations, ctx.clock.now(), &ctx.config.alerts)
    };
    for alert in alerts {
        send(ctx, &alert).await;
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
