//! The `repdist` binary: `serve` runs the service, `migrate` prepares its database, `demo` runs it
//! end to end on embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use repdist::config::Config;

#[derive(Parser)]
#[command(name = "repdist", version, about = "Report distribution service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: REST + WebSocket API, dataflow, delivery.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit (`serve` also applies them at start).
    Migrate(MigrateArgs),
    /// Run the whole service in-process against local receivers and report what happened.
    Demo(repdist::demo::DemoArgs),
}

#[derive(clap::Args)]
struct MigrateArgs {
    /// A TOML configuration file (default: ./repdist.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// PostgreSQL to migrate (default: storage.database_url / REPDIST_DATABASE_URL).
    #[arg(long, conflicts_with = "data_dir")]
    database_url: Option<String>,
    /// Migrate the embedded SQLite database in this directory instead.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML configuration file (default: ./repdist.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Where the gRPC API listens (config key `grpc_addr`).
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Timely worker threads.
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_log_filter(&cli.command).into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Demo(args) => {
                let json = args.json;
                let summary = repdist::demo::run(args).await?;
                repdist::demo::print(&summary, json);
                if summary.lost > 0 {
                    anyhow::bail!("{} deliveries were lost", summary.lost);
                }
                Ok(())
            }
        }
    })
}

fn default_log_filter(command: &Command) -> &'static str {
    match command {
        Command::Serve(_) | Command::Migrate(_) => "info",
        Command::Demo(_) => "warn",
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(addr) = args.http_addr {
        config.http_addr = addr;
    }
    if let Some(addr) = args.grpc_addr {
        config.grpc_addr = addr;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    config.validate()?;
    let server = repdist::server::start(config).await.context("starting repdist")?;
    // Tests and scripts read the bound address from this line (useful with port 0).
    println!("listening on http://{}", server.http_addr());
    // Only one line: scripts read it and close the pipe. The gRPC address is in the log ("gRPC serving").
    shutdown_signal().await;
    tracing::info!("shutting down: finishing attempts under way");
    server.shutdown().await.context("shutting down")?;
    Ok(())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(url) = args.database_url {
        config.storage.database_url = Some(url);
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
        config.storage.database_url = None;
    }
    config.validate()?;
    let target = match &config.storage.database_url {
        Some(url) => repdist::store::redacted_url(url),
        None => config.data_dir.join("repdist.db").display().to_string(),
    };
    repdist::store::open(&config).await.with_context(|| format!("migrating {target}"))?;
    println!("migrated {target}");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return drop(ctrl_c.await),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
