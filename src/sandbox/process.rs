//! `statecart serve` as a child process: started with exactly the settings given, found by the
//! address it logs, stopped by a signal, killed when dropped.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, ChildStderr, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::sync::oneshot;

/// How long a child may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop after a signal (actix waits up to 30 s for requests).
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// How often the exit status of a stopping child is looked at.
const POLL_EVERY: Duration = Duration::from_millis(25);
/// Log lines quoted when a child ends before it listens.
const TAIL_LINES: usize = 5;
/// Log lines kept for [`Instance::log`]: the last ones, where a stop writes its steps.
const KEPT_LINES: usize = 2000;

/// What every instance runs with unless `settings` say otherwise: a free port on loopback, no
/// login or guest rate limit (scripted clients log in and start carts many times a minute from
/// one address), and no drain on SIGTERM (nothing balances these instances unless a caller
/// says so, and a drain would only make each stop slower).
const BASE_SETTINGS: [(&str, &str); 4] = [
    ("listen", "127.0.0.1:0"),
    ("login_rate_limit_per_minute", "0"),
    ("guest_sessions_per_minute", "0"),
    ("shutdown_drain_secs", "0"),
];

/// `binary`, ready for arguments, with no `STATECART_*` inherited from this process (only what
/// the caller sets reaches it), plain-text logs (`NO_COLOR`) at `info` (sqlx at `warn`).
pub fn command(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STATECART_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info,sqlx=warn").env("NO_COLOR", "1");
    cmd
}

/// How to stop an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: a graceful stop.
    Term,
    /// SIGKILL: a crash, as far as the process can tell.
    Kill,
}

impl Signal {
    /// The name `kill -<name>` takes.
    fn name(self) -> &'static str {
        match self {
            Self::Term => "TERM",
            Self::Kill => "KILL",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

/// A running `statecart serve`; killed when dropped, so nothing leaves a process behind.
pub struct Instance {
    child: Child,
    base: String,
    /// The last [`KEPT_LINES`] lines of its log.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Instance {
    /// Starts `binary serve` with [`BASE_SETTINGS`] and then exactly `settings` (a key such as
    /// `database_url` becomes `STATECART_DATABASE_URL`), and waits until it logs the address it
    /// listens on. Its log is read for its whole life, so logging never blocks it.
    pub async fn start(binary: &Path, settings: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut cmd = command(binary);
        cmd.arg("serve");
        let base = BASE_SETTINGS.iter().map(|&(key, value)| (key, value));
        let given = settings.iter().map(|(key, value)| (*key, value.as_str()));
        for (name, value) in base.chain(given) {
            // The app reads only the keys it knows: a misspelt one would be ignored silently.
            let key = crate::config::KEYS
                .iter()
                .find(|k| k.name == name)
                .with_context(|| format!("`{name}` is not a config key"))?;
            cmd.env(key.env(), value);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} serve", binary.display()))?;
        let stderr = child.stderr.take().context("the child's stderr")?;
        // From here on a failure drops `instance`, which kills the child.
        let log = Arc::default();
        let mut instance = Self {
            child,
            base: String::new(),
            log: Arc::clone(&log),
        };
        let address = read_log(stderr, log);
        instance.base = match tokio::time::timeout(START_TIMEOUT, address).await {
            Ok(Ok(Ok(address))) => address,
            Ok(Ok(Err(tail))) => {
                let status = instance.wait_for_exit().await?;
                bail!("statecart serve exited ({status}) before listening; its log ends:\n{tail}");
            }
            Ok(Err(_)) => bail!("the log reader of statecart serve ended early"),
            Err(_) => bail!(
                "statecart serve did not log its address within {} s",
                START_TIMEOUT.as_secs()
            ),
        };
        Ok(instance)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL of `path` on this instance.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// CPU time the process has used so far (user + system), from `/proc/<pid>/stat`; `None`
    /// where there is no such file (not Linux).
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may hold spaces) start at its closing ')'.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_secs_f64(
            ticks as f64 / clock_ticks_per_second(),
        ))
    }

    /// Resident set size of the process now, in bytes (`/proc/<pid>/status`); `None` where
    /// there is no such file.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes_of(&self.child.id().to_string())
    }

    /// The last lines of its log so far (at most [`KEPT_LINES`]).
    pub fn log(&self) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().cloned().collect()
    }

    /// Sends `signal` and waits (bounded) for the process to end; its exit status.
    pub async fn stop(mut self, signal: Signal) -> anyhow::Result<ExitStatus> {
        self.signal(signal)?;
        self.wait_for_exit()
            .await
            .with_context(|| format!("after {signal}"))
    }

    /// Sends `signal` and returns at once: what the process does next is for the caller to
    /// watch, then [`Instance::wait_for_exit`].
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{}", signal.name()))
            .arg(self.child.id().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{} {} failed", signal.name(), self.child.id());
        }
        Ok(())
    }

    /// Waits up to [`STOP_TIMEOUT`] for the process to end; its exit status.
    pub async fn wait_for_exit(&mut self) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the child")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "statecart serve did not end within {} s",
                    STOP_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads the child's log on a thread of its own until the child closes it, keeping its last
/// lines in `kept`. The answer is the address of the first "listening on" line, or, when the
/// log ends without one, its last lines.
fn read_log(
    stderr: ChildStderr,
    kept: Arc<Mutex<VecDeque<String>>>,
) -> oneshot::Receiver<Result<String, String>> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut answer = Some(tx);
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        // Split on bytes, not `lines()`: a line that is not UTF-8 must not stop the reading.
        for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line);
            {
                let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.len() == KEPT_LINES {
                    kept.pop_front();
                }
                kept.push_back(line.clone().into_owned());
            }
            if answer.is_none() {
                continue; // Answered already: only keep.
            }
            if let Some(address) = listening_address(&line) {
                if let Some(answer) = answer.take() {
                    let _ = answer.send(Ok(address));
                }
            } else {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.into_owned());
            }
        }
        if let Some(answer) = answer {
            let _ = answer.send(Err(Vec::from(tail).join("\n")));
        }
    });
    rx
}

/// `http://127.0.0.1:1234` from the startup log line `... listening on http://127.0.0.1:1234 ...`.
fn listening_address(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    let address = rest.split_whitespace().next()?;
    address.starts_with("http://").then(|| address.to_owned())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Resident set size of process `pid` (or `self`) now, in bytes, from `/proc/<pid>/status`;
/// `None` where there is no such file.
pub fn rss_bytes_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_startup_line() {
        let line = "2026-11-29T10:00:00Z  INFO statecart::startup: listening on \
                    http://127.0.0.1:41234 address=127.0.0.1:41234";
        assert_eq!(
            listening_address(line).as_deref(),
            Some("http://127.0.0.1:41234")
        );
        assert_eq!(listening_address("INFO starting statecart"), None);
    }
}
