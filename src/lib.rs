//! statecart: a small real shop that runs as a stateless or a stateful server by one setting.

pub mod admin;
pub mod compare;
pub mod config;
pub mod db;
pub mod domain;
pub mod leases;
pub mod lifecycle;
pub mod metrics;
pub mod sandbox;
pub mod session;
pub mod startup;
pub mod web;

pub use config::Settings;
pub use startup::Application;

use anyhow::Context as _;

/// Builds the app from `settings` and serves until SIGINT/SIGTERM: first drains for
/// `shutdown_drain_secs` (see [`lifecycle`]), then stops accepting, finishes what is in flight
/// and closes the pools. A second signal during the drain ends the drain at once.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(config = %settings, "starting statecart");
    // Listening for the signals starts before the server does: a SIGTERM that arrives right
    // after the "listening on" line must drain, not kill the process the default way.
    let mut signals = StopSignals::listen()?;
    let drain = settings.shutdown_drain;
    let app = Application::build(settings).await?;
    let stopper = app.handle();
    tokio::spawn(async move {
        signals.next().await;
        if !drain.is_zero() && stopper.begin_drain() {
            tracing::info!(
                drain_secs = drain.as_secs(),
                "draining: /healthz answers 503 and every response closes its connection; \
                 still serving for {} s",
                drain.as_secs()
            );
            tokio::select! {
                () = tokio::time::sleep(drain) => {}
                () = signals.next() => tracing::info!("second signal: ending the drain now"),
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

/// SIGINT and SIGTERM, listened for from creation on (so none is missed between two waits).
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
