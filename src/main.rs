//! The `statecart` command: `serve` (default), `migrate`, `admin`, `compare` and `key`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use statecart::{
    Settings,
    config::{LogFormat, RawSettings},
    db::Db,
};

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
    /// Change the catalog (same config as serve)
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Run every session backend side by side and measure what each keeps, weighs and serves
    Compare(statecart::compare::CompareArgs),
    /// Session keys: `key new` prints a fresh one for `session_key`
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Print a fresh random key (base64, 64 bytes) for `session_key`
    New,
}

#[derive(Subcommand)]
enum AdminAction {
    /// Set a product's price: admin set-price <product_id> <cents>
    SetPrice {
        /// Product number
        #[arg(allow_hyphen_values = true)]
        product_id: String,
        /// New price in cents
        #[arg(allow_hyphen_values = true)]
        cents: String,
    },
    /// Set a product's stock: admin set-stock <product_id> <count>
    SetStock {
        /// Product number
        #[arg(allow_hyphen_values = true)]
        product_id: String,
        /// Units in stock
        #[arg(allow_hyphen_values = true)]
        count: String,
    },
    /// Make an existing account an admin: admin grant <username>
    Grant {
        /// The account's username
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
    /// Take the admin role from an account: admin revoke <username>
    Revoke {
        /// The account's username
        #[arg(allow_hyphen_values = true)]
        username: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A new key needs no settings: it is what one asks for when the configured key is bad.
    if let Some(Command::Key {
        action: KeyAction::New,
    }) = cli.command
    {
        println!("{}", statecart::session::key::Keys::new_encoded());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.config.as_deref(), cli.settings) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("statecart: {err}");
            return ExitCode::from(2);
        }
    };
    init_tracing(settings.log_format);
    let result = actix_web::rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => statecart::run(settings).await.map(|()| ExitCode::SUCCESS),
            Command::Migrate => migrate(settings).await.map(|()| ExitCode::SUCCESS),
            Command::Admin { action } => admin(&settings, action).await,
            Command::Compare(args) => statecart::compare::run(args, settings)
                .await
                .map(|()| ExitCode::SUCCESS),
            // Answered above, before the settings.
            Command::Key { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            tracing::error!(error = ?err, "statecart failed");
            eprintln!("statecart: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an admin command: refused input exits 2, like a config mistake.
async fn admin(settings: &Settings, action: AdminAction) -> anyhow::Result<ExitCode> {
    use statecart::admin::{AdminError, Field, set, set_role};
    let result = match &action {
        AdminAction::SetPrice { product_id, cents } => {
            set(settings, Field::Price, product_id, cents).await
        }
        AdminAction::SetStock { product_id, count } => {
            set(settings, Field::Stock, product_id, count).await
        }
        AdminAction::Grant { username } => set_role(settings, username, true).await,
        AdminAction::Revoke { username } => set_role(settings, username, false).await,
    };
    match result {
        Ok(done) => {
            println!("{done}");
            Ok(ExitCode::SUCCESS)
        }
        Err(refused @ AdminError::Refused(_)) => {
            eprintln!("statecart: {refused}");
            Ok(ExitCode::from(2))
        }
        Err(AdminError::Failed(err)) => Err(err),
    }
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let db = Db::open(&settings.database_url).await?;
    db.migrate().await?;
    tracing::info!(database_url = %settings.database_url, "migrations applied");
    db.close().await;
    Ok(())
}

/// Logs to stderr, as text or as one JSON object per line (`log_format`); set after the
/// settings are read, so a config mistake is still one plain line.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The request span (request id, method, path) rides in every line of the request.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
