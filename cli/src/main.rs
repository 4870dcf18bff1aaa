//! The `milink` binary: `milink up` runs the embedded host; every other command is a client of a
//! running host's HTTP API (`--server`), so scripts and people see exactly what the API says.
//!
//! Exit codes scripts can rely on: 0 done; 1 unexpected error (including a server error, 5xx); 2 bad
//! usage; 3 server unreachable; 4 request refused (4xx: the message says why); 5 the migration ended
//! Failed or Cancelled, or the cutover was abandoned, while waiting; 6 timed out waiting; 7 a verification
//! found differences between source and target.
mod batch;
mod client;
mod commands;
mod doctor;
mod fleet;
mod functions_host;
mod output;
mod up;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "milink", version, about = "Migrate live databases to a managed instance with a cutover of seconds.")]
struct Cli {
    /// Address of a running `milink up`.
    #[arg(long, global = true, env = "MILINK_SERVER", default_value = "http://127.0.0.1:7878")]
    server: String,
    /// Output format of read commands.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: output::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded host: API, queue, handlers and timers in one process, state in one SQLite file.
    Up(up::UpArgs),
    /// Assess a source connection: instance findings, per-database readiness, a size recommendation.
    Assess(commands::AssessArgs),
    /// Start, watch, cut over and cancel migrations.
    #[command(subcommand)]
    Migrate(commands::Migrate),
    /// One action on many migrations: cut over or cancel every one from a source, to a target, or by id.
    #[command(subcommand)]
    Batch(batch::Batch),
    /// Fleet plans: many migrations in waves, with an order and approval gates (a TOML plan).
    #[command(subcommand)]
    Fleet(fleet::Fleet),
    /// Each connection's TLS as negotiated: version, cipher, server certificate (reads the config itself).
    Doctor(doctor::DoctorArgs),
    /// Messages that ran out of retries.
    DeadLetters,
    /// Serve the Azure Functions custom handler (host.json runs `milink functions`).
    Functions(functions_host::FunctionsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Assess(args) => commands::assess(&client::Client::new(&cli.server), cli.output, args).await,
            Command::Migrate(command) => commands::migrate(&client::Client::new(&cli.server), cli.output, command).await,
            Command::Batch(command) => batch::run(&client::Client::new(&cli.server), cli.output, command).await,
            Command::Fleet(command) => fleet::run(&client::Client::new(&cli.server), cli.output, command).await,
            Command::Doctor(args) => doctor::run(args, cli.output).await,
            Command::DeadLetters => commands::dead_letters(&client::Client::new(&cli.server), cli.output).await,
            Command::Functions(args) => functions_host::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.downcast_ref::<client::CliError>().map_or(1, client::CliError::exit_code);
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}
