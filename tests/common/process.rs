//! The real binary as a child process: to restart it, kill it, or run two side by side.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// A running `statecart serve`, killed when dropped.
pub struct Instance {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
}

impl Instance {
    /// Starts `statecart serve` on a free port with exactly these `STATECART_*` settings.
    pub fn spawn(settings: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_statecart"));
        for (key, _) in std::env::vars() {
            if key.starts_with("STATECART_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("serve")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("STATECART_LISTEN", "127.0.0.1:0")
            .env("STATECART_LOGIN_RATE_LIMIT_PER_MINUTE", "0");
        for (key, value) in settings {
            cmd.env(format!("STATECART_{}", key.to_ascii_uppercase()), value);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn statecart");
        let stderr = child.stderr.take().expect("stderr");
        let (found, address) = mpsc::channel();
        // Read until the listening line, then keep draining so the child never blocks on logs.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some(tx) = found.take()
                {
                    let address = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(address);
                }
            }
        });
        let address = address
            .recv_timeout(Duration::from_secs(60))
            .expect("statecart starts and logs its address");
        Self { child, address }
    }

    /// The URL of `path` on this instance.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Sends a signal (TERM or KILL) and waits for the process to end.
    pub fn stop_with(mut self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal}");
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
