//! statecart: a small real shop that runs as a stateless or a stateful server by one setting.

pub mod admin;
pub mod compare;
pub mod config;
pub mod db;
pub mod domain;
pub mod leases;
pub mod metrics;
pub mod sandbox;
pub mod session;
pub mod startup;
pub mod web;

pub use config::Settings;
pub use startup::Application;

/// Builds the app from `settings` and serves until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(config = %settings, "starting statecart");
    let app = Application::build(settings).await?;
    let stopper = app.handle();
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!("stopping: ending live leases, finishing requests");
        stopper.stop(true).await;
    });
    app.run_until_stopped().await?;
    Ok(())
}

/// The first SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
