//! statecart: a small real shop that runs as a stateless or a stateful server by one setting.

pub mod config;
pub mod db;
pub mod domain;
pub mod session;
pub mod startup;
pub mod web;

pub use config::Settings;
pub use startup::Application;

/// Builds the app from `settings` and serves until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(config = %settings, "starting statecart");
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
