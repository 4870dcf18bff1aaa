//! `milink up`: the embedded host in one process, serving the API under `/api` and the web UI at `/`.
//!
//! It refuses to listen beyond loopback without an access token: the API starts, cuts over and cancels
//! migrations, so on a reachable port it must answer its owner only (`functions/src/ui/auth.rs`).
use anyhow::Context as _;
use clap::Args;
use milink_core::config::Config;
use milink_core::ports::SystemClock;
use milink_functions::context::Context;
use milink_functions::engines::Engines;
use milink_functions::ui::auth::Access;
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
    /// A file holding the access token (instead of MILINK_TOKEN). With a token every request but
    /// /api/health needs it; without one milink listens on loopback only.
    #[arg(long, env = "MILINK_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

/// The access rule: a token from `--token-file` or `MILINK_TOKEN` (read once, kept in memory only).
fn access(token_file: Option<&std::path::Path>) -> anyhow::Result<Access> {
    let token = match token_file {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading the token file {}", path.display()))?),
        None => std::env::var("MILINK_TOKEN").ok().filter(|t| !t.trim().is_empty()),
    };
    match token {
        Some(token) => Access::with_token(&token).context("the access token (MILINK_TOKEN or --token-file) is refused"),
        None => Ok(Access::open()),
    }
}

/// Without a token, answering anything but this machine would give the API to whoever reaches the port.
fn refuse_open_listen(address: std::net::SocketAddr, access: &Access) -> anyhow::Result<()> {
    if access.is_protected() || address.ip().is_loopback() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen on {address} without a token: anyone who reaches it could start and cut over migrations. \
         Set MILINK_TOKEN (or --token-file) to a secret of 16+ characters, or listen on loopback (127.0.0.1)"
    )
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
    let access = access(args.token_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick another with --listen", config.server.listen))?;
    let address = listener.local_addr()?;
    refuse_open_listen(address, &access)?;
    let store = Arc::new(SqliteStore::open(&config.server.state)?);
    tracing::info!(%address, state = %config.server.state.display(), connections = config.connections.len(), token = access.is_protected(), "milink up");
    let ctx = Context::new(config, store.clone(), Engines::default(), Arc::new(SystemClock));
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    milink_functions::embedded::run(ctx, store, listener, access, shutdown).await?;
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
