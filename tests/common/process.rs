//! The real binary as a child process: to restart it, kill it, or run two side by side. A thin
//! layer over `statecart::sandbox::Instance` for test steps that do not await.

use std::path::Path;

use statecart::sandbox::{self, Signal};

use super::services::block_on;

/// A running `statecart serve`, killed when dropped.
pub struct Instance {
    inner: sandbox::Instance,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
}

impl Instance {
    /// Starts `statecart serve` on a free port with exactly these `STATECART_*` settings.
    pub fn spawn(settings: &[(&str, String)]) -> Self {
        let binary = Path::new(env!("CARGO_BIN_EXE_statecart"));
        let inner = block_on(|| sandbox::Instance::start(binary, settings))
            .expect("a runtime to start statecart on")
            .unwrap_or_else(|e| panic!("statecart starts and logs its address: {e:#}"));
        Self {
            address: inner.base().to_owned(),
            inner,
        }
    }

    /// Starts `statecart serve` as [`Instance::spawn`] does, awaiting instead of blocking: for
    /// a test whose other tasks (clients, a balancer) must go on meanwhile.
    pub async fn start(settings: &[(&str, String)]) -> Self {
        let binary = Path::new(env!("CARGO_BIN_EXE_statecart"));
        let inner = sandbox::Instance::start(binary, settings)
            .await
            .unwrap_or_else(|e| panic!("statecart starts and logs its address: {e:#}"));
        Self {
            address: inner.base().to_owned(),
            inner,
        }
    }

    /// The URL of `path` on this instance.
    pub fn url(&self, path: &str) -> String {
        self.inner.url(path)
    }

    /// `127.0.0.1:<port>`, for a socket.
    pub fn socket_address(&self) -> std::net::SocketAddr {
        let host_port = self.address.trim_start_matches("http://");
        host_port.parse().expect("the logged address is host:port")
    }

    /// Sends SIGTERM and returns at once; see [`Instance::exit_status`].
    pub fn terminate(&self) {
        self.inner
            .signal(Signal::Term)
            .unwrap_or_else(|e| panic!("SIGTERM to statecart: {e:#}"));
    }

    /// Waits (bounded) for the process to end, without blocking the test's other tasks.
    pub async fn exit_status(&mut self) -> std::process::ExitStatus {
        self.inner
            .wait_for_exit()
            .await
            .unwrap_or_else(|e| panic!("statecart ends: {e:#}"))
    }

    /// The last lines of its log so far.
    pub fn log(&self) -> Vec<String> {
        self.inner.log()
    }

    /// Sends a signal (TERM or KILL) and waits for the process to end.
    pub fn stop_with(self, signal: &str) {
        let signal = match signal {
            "TERM" => Signal::Term,
            "KILL" => Signal::Kill,
            other => panic!("no such signal here: {other}"),
        };
        block_on(|| self.inner.stop(signal))
            .expect("a runtime to stop statecart on")
            .unwrap_or_else(|e| panic!("statecart stops: {e:#}"));
    }
}
