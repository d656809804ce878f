//! The `repdist` binary: `serve` runs the service, `migrate` prepares its database, `demo` runs it
//! end to end on embedded defaults, `bench ws` loads its update streams, `export` writes delivery
//! history or stats to Parquet.

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
    Migrate(StoreArgs),
    /// Run the whole service in-process against local receivers and report what happened.
    Demo(repdist::demo::DemoArgs),
    /// Load tools: `bench ws` measures the update streams' fan-out.
    #[command(subcommand)]
    Bench(repdist::bench::BenchCommand),
    /// Write delivery history (one row per attempt outcome) or the distribution_stats windows from
    /// the analytics store under a data directory to a Parquet file.
    Export(ExportArgs),
    /// API keys: create (prints the key, once), list, revoke. Works beside a running server.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (only its hash is stored: it cannot be shown again).
    Create {
        #[command(flatten)]
        target: StoreArgs,
        #[arg(long, value_parser = ["admin", "publisher", "subscriber"])]
        role: String,
        /// The subscriber a `subscriber` key acts for (required for that role only).
        #[arg(long)]
        subscriber: Option<String>,
    },
    /// List keys (never the secrets), revoked ones included.
    List {
        #[command(flatten)]
        target: StoreArgs,
    },
    /// Revoke a key by its id (`key_...`): it authenticates nothing from now on.
    Revoke {
        #[command(flatten)]
        target: StoreArgs,
        key_id: String,
    },
}

/// Which store a command acts on (`keys`, `migrate`): as `serve` finds it (config file,
/// REPDIST_DATABASE_URL), or the SQLite database under --data-dir, or the PostgreSQL at
/// --database-url.
#[derive(clap::Args)]
struct StoreArgs {
    /// A TOML configuration file (default: ./repdist.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// PostgreSQL (default: storage.database_url / REPDIST_DATABASE_URL).
    #[arg(long, conflicts_with = "data_dir")]
    database_url: Option<String>,
    /// The embedded SQLite database in this directory instead.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    /// The configuration with these choices applied, validated.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(url) = &self.database_url {
            config.storage.database_url = Some(url.clone());
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
            config.storage.database_url = None;
        }
        config.validate()?;
        Ok(config)
    }
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The service's data directory (holding analytics.duckdb). The server must not be running on it.
    #[arg(long)]
    data_dir: PathBuf,
    /// Only rows at or after this time: RFC 3339 or a date (2025-01-01, midnight UTC).
    #[arg(long)]
    since: Option<String>,
    /// The file format (Parquet is the one there is).
    #[arg(long, value_enum, default_value = "parquet")]
    format: ExportFormat,
    /// The file to write (replaced if it exists).
    #[arg(long)]
    out: PathBuf,
    /// `deliveries`: one row per delivery attempt outcome; `stats`: the distribution_stats windows.
    #[arg(long, value_enum, default_value = "deliveries")]
    what: ExportWhat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Parquet,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportWhat {
    Deliveries,
    Stats,
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
    /// Serve POST /api/v1/reporting/analytics/query (operators' read-only SQL; config key
    /// `analytics.sql_enabled`).
    #[arg(long)]
    enable_sql_analytics: bool,
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
            Command::Export(args) => export(args).await,
            Command::Demo(args) => {
                let json = args.json;
                let summary = repdist::demo::run(args).await?;
                repdist::demo::print(&summary, json);
                if summary.lost > 0 {
                    anyhow::bail!("{} deliveries were lost", summary.lost);
                }
                Ok(())
            }
            Command::Bench(command) => repdist::bench::run(command).await,
            Command::Keys(command) => keys(command).await,
        }
    })
}

fn default_log_filter(command: &Command) -> &'static str {
    match command {
        Command::Serve(_) | Command::Migrate(_) | Command::Export(_) => "info",
        Command::Keys(_) => "warn",
        Command::Demo(_) => "warn",
        // Under saturation SQLite reads wait for a connection; one warning per wait would bury the figures.
        Command::Bench(_) => "warn,sqlx::pool::acquire=error",
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
    if args.enable_sql_analytics {
        config.analytics.sql_enabled = true;
    }
    config.validate()?;
    let data_dir = config.data_dir.clone();
    let server = repdist::server::start(config).await.context("starting repdist")?;
    if let Some(key) = server.bootstrap_admin_key() {
        // Once, on stderr: stdout's first line is the address scripts wait for.
        eprintln!(
            "no API key existed: created an admin key (also written to {}): {key}",
            data_dir.join(repdist::auth::ADMIN_KEY_FILE).display()
        );
    }
    // Tests and scripts read the bound address from this line (useful with port 0).
    println!("listening on http://{}", server.http_addr());
    // Only one line: scripts read it and close the pipe. The gRPC address is in the log ("gRPC serving").
    shutdown_signal().await;
    tracing::info!("shutting down: finishing attempts under way");
    server.shutdown().await.context("shutting down")?;
    Ok(())
}

async fn migrate(args: StoreArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let target = match &config.storage.database_url {
        Some(url) => repdist::store::redacted_url(url),
        None => config.data_dir.join("repdist.db").display().to_string(),
    };
    repdist::store::open(&config).await.with_context(|| format!("migrating {target}"))?;
    println!("migrated {target}");
    Ok(())
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use repdist::store::{AuditEntry, Role};
    let target = match &command {
        KeysCommand::Create { target, .. } | KeysCommand::List { target } | KeysCommand::Revoke { target, .. } => target,
    };
    let config = target.config()?;
    let store = repdist::store::open(&config).await.context("opening the store")?;
    match command {
        KeysCommand::Create { role, subscriber, .. } => {
            let role = Role::parse(&role).context("--role must be admin, publisher or subscriber")?;
            let created = repdist::auth::keys::create(store.as_ref(), role, subscriber).await?;
            let mut entry = AuditEntry::now("cli", "keys.create", Some(created.record.key_id.clone()), "ok");
            entry.detail = Some(format!("role {}", role.as_str()));
            store.append_audit(&[entry]).await?;
            eprintln!("created {} key {} (shown once; only its hash is stored)", role.as_str(), created.record.key_id);
            println!("{}", created.key);
        }
        KeysCommand::List { .. } => {
            let mut table = comfy_table::Table::new();
            table.set_header(["key_id", "role", "subscriber_id", "created_at", "revoked_at"]);
            let time = |micros: i64| chrono::DateTime::from_timestamp_micros(micros).map(|t| t.to_rfc3339()).unwrap_or_default();
            for key in store.api_keys().await? {
                table.add_row([
                    key.key_id,
                    key.role.as_str().to_string(),
                    key.subscriber_id.unwrap_or_default(),
                    time(key.created_at),
                    key.revoked_at.map(time).unwrap_or_default(),
                ]);
            }
            println!("{table}");
        }
        KeysCommand::Revoke { key_id, .. } => {
            let revoked = store.revoke_api_key(&key_id, chrono::Utc::now().timestamp_micros()).await?;
            let outcome = if revoked.is_some() { "ok" } else { "not_found" };
            store.append_audit(&[AuditEntry::now("cli", "keys.revoke", Some(key_id.clone()), outcome)]).await?;
            anyhow::ensure!(revoked.is_some(), "no key {key_id}");
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let since = match &args.since {
        Some(text) => Some(parse_since(text).with_context(|| format!("--since {text}"))?),
        None => None,
    };
    let what = match args.what {
        ExportWhat::Deliveries => repdist::analytics::Export::Deliveries,
        ExportWhat::Stats => repdist::analytics::Export::Stats,
    };
    let ExportFormat::Parquet = args.format;
    let (dir, out) = (args.data_dir.clone(), args.out.clone());
    let rows = tokio::task::spawn_blocking(move || -> Result<usize, repdist::analytics::AnalyticsError> {
        let conn = repdist::analytics::open_read_only(&dir)?;
        repdist::analytics::export::to_parquet(&conn, what, since, &out)
    })
    .await?
    .with_context(|| format!("exporting from {}", args.data_dir.display()))?;
    println!("wrote {rows} rows to {}", args.out.display());
    Ok(())
}

/// RFC 3339 or a date (midnight UTC), as microseconds since the epoch.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_micros());
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .context("expected an RFC 3339 time (2025-01-01T00:00:00Z) or a date (2025-01-01)")?;
    Ok(date.and_hms_opt(0, 0, 0).context("midnight exists")?.and_utc().timestamp_micros())
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
