//! The `statecart` command: `serve` (default) and `migrate`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use statecart::{Settings, config::RawSettings, db::Db};

#[derive(Parser)]
#[command(
    name = "statecart",
    version,
    about = "A shop that runs stateless or stateful by one setting"
)]
struct Cli {
    /// TOML config file (keys as in the README's config table)
    #[arg(long, global = true, env = "STATECART_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: RawSettings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the shop (the default)
    Serve,
    /// Apply database migrations and exit
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let settings = match Settings::load(cli.config.as_deref(), cli.settings) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("statecart: {err}");
            return ExitCode::from(2);
        }
    };
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => statecart::run(settings).await,
            Command::Migrate => migrate(settings).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = ?err, "statecart failed");
            eprintln!("statecart: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let db = Db::connect(&settings.database_url).await?;
    db.migrate().await?;
    tracing::info!(database_url = %statecart::config::mask_url(&settings.database_url), "migrations applied");
    db.close().await;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
