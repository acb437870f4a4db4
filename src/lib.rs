//! statecart: a small real shop that runs as a stateless or a stateful server by one setting.

pub mod admin;
pub mod compare;
pub mod config;
pub mod db;
pub mod domain;
pub mod leases;
pub mod lifecycle;
pub mod sandbox;
pub mod session;
pub mod startup;
pub mod web;

pub use config::Settings;
pub use startup::Application;

/// Builds the app from `settings` and serves until SIGINT/SIGTERM: first drains for
/// `shutdown_drain_secs` (see [`lifecycle`]), then stops accepting, finishes what is in flight
/// and closes the pools. A second signal during the drain ends the drain at once.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(config = %settings, "starting statecart");
    let drain = settings.shutdown_drain;
    let app = Application::build(settings).await?;
    let stopper = app.handle();
    tokio::spawn(async move {
        stop_signal().await;
        if !drain.is_zero() && stopper.begin_drain() {
            tracing::info!(
                drain_secs = drain.as_secs(),
                "draining: /healthz answers 503 and every response closes its connection; \
                 still serving for {} s",
                drain.as_secs()
            );
            tokio::select! {
                () = tokio::time::sleep(drain) => {}
                () = stop_signal() => tracing::info!("second signal: ending the drain now"),
            }
        }
        tracing::info!(
            "stopping: no new connections; ending live leases, finishing requests in flight"
        );
        stopper.stop(true).await;
    });
    app.run_until_stopped().await?;
    Ok(())
}

/// The first SIGINT or SIGTERM from now on.
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
