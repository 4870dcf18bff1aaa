//! `milink functions`: the Azure Functions custom handler (host.json starts the binary with this argument).
//!
//! Reads its settings from the environment (the Function App's app settings; see
//! `milink_functions::azure::settings`), connects to Table Storage and Service Bus, and serves the
//! invocations the Functions host POSTs on 127.0.0.1:`FUNCTIONS_CUSTOMHANDLER_PORT`. It must answer the
//! host's readiness probe within the host's start timeout (30 s), and on a first deploy storage refuses the
//! identity with 403 for minutes while role assignments propagate: so it binds first, answers the probe at
//! once (503 "starting: <why>" until storage answers), and connects in the background with retries; an
//! invocation that arrives meanwhile waits up to a minute for it. A malformed setting still fails the start
//! with a message the host logs, since waiting cannot fix it.
use anyhow::Context as _;
use clap::Args;
use milink_core::ports::SystemClock;
use milink_functions::azure::{self, settings, AzureSettings};
use milink_functions::engines::Engines;
use std::sync::Arc;
use std::time::Duration;

/// `milink functions` options.
#[derive(Args)]
pub(crate) struct FunctionsArgs {
    /// The port the Functions host chose (it sets FUNCTIONS_CUSTOMHANDLER_PORT).
    #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT", default_value_t = 7072)]
    port: u16,
}

/// Serves invocations until SIGTERM (the host stops workers that way), then finishes in-flight ones.
pub(crate) async fn run(args: FunctionsArgs) -> anyhow::Result<()> {
    let _telemetry = milink_functions::telemetry::init("milink-functions");
    // Longer than any request to Azure or a webhook; the Functions host gives each invocation up to
    // functionTimeout anyway.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let env = |name: &str| std::env::var(name).ok();
    let settings = AzureSettings::from_env(&env, &http).map_err(anyhow::Error::msg).context("reading app settings")?;
    let address = format!("127.0.0.1:{}", args.port);
    let listener = tokio::net::TcpListener::bind(&address).await.with_context(|| format!("cannot listen on {address}"))?;
    tracing::info!(%address, "milink custom handler listening; connecting to Table Storage and Service Bus");
    let connect = move || {
        let (settings, http) = (settings.clone(), http.clone());
        async move {
            let env = |name: &str| std::env::var(name).ok();
            settings::connect(settings, Engines::default(), Arc::new(SystemClock), &env, http).await
        }
    };
    azure::serve_when_ready(connect, listener, stop_signal()).await?;
    Ok(())
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
