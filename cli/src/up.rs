//! `milink up`: the embedded host in one process.
use anyhow::Context as _;
use clap::Args;
use milink_core::config::Config;
use milink_core::ports::SystemClock;
use milink_functions::context::Context;
use milink_functions::engines::Engines;
use milink_sqlite::SqliteStore;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// `milink up` options; each overrides the config file's `[server]` value.
#[derive(Args)]
pub(crate) struct UpArgs {
    /// The config file with the connections.
    #[arg(long, short = 'c', env = "MILINK_CONFIG", default_value = "milink.toml")]
    config: PathBuf,
    /// Address to listen on (default from the config, else 127.0.0.1:7878).
    #[arg(long)]
    listen: Option<String>,
    /// SQLite state file (default from the config, else milink.db beside it).
    #[arg(long)]
    state: Option<PathBuf>,
    /// How often every link is polled, in milliseconds (default 1000).
    #[arg(long)]
    poll_interval_ms: Option<u64>,
}

/// Runs the host until Ctrl-C or SIGTERM, then drains in-flight steps.
pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    let _telemetry = milink_functions::telemetry::init("milink");
    let mut config = Config::load(&args.config)
        .with_context(|| format!("loading {} (see README.md for an example config)", args.config.display()))?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(state) = args.state {
        config.server.state = state;
    }
    if let Some(interval) = args.poll_interval_ms {
        config.server.poll_interval_ms = interval;
    }
    let store = Arc::new(SqliteStore::open(&config.server.state)?);
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick another with --listen", config.server.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, state = %config.server.state.display(), connections = config.connections.len(), "milink up");
    let ctx = Context::new(config, store.clone(), Engines::default(), Arc::new(SystemClock));
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    milink_functions::embedded::run(ctx, store, listener, shutdown).await?;
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler works on unix");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing in-flight steps");
    shutdown.cancel();
}
