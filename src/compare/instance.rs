//! The real `statecart serve` as a child process, in a sandbox of its own: a fresh data dir,
//! plus a fresh PostgreSQL database or a private Redis key prefix, removed afterwards.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::services::{self, Target};

/// How long a child may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop after SIGTERM (actix waits up to 30 s for requests).
const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// How often a child's log and exit status are looked at while waiting.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// One experiment's private world: every instance started in it shares the data dir (so the
/// SQLite file and the generated session key) and the database or Redis prefix.
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// The app database of every instance in this sandbox.
    pub database_url: String,
    /// The session backend every instance runs.
    pub backend: crate::config::SessionBackend,
    /// `cookie_revocation` for every instance.
    cookie_revocation: bool,
    redis: Option<(String, String)>,
    postgres: Option<services::PgDatabase>,
}

impl Sandbox {
    /// A fresh sandbox for `target`: a temp dir, and on PostgreSQL a new database.
    pub async fn create(target: &Target) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("statecart-compare-")
            .tempdir()
            .context("creating a temporary data dir")?;
        let (database_url, postgres) = match &target.postgres_url {
            Some(admin_url) => {
                let db = services::PgDatabase::create(admin_url).await?;
                (db.url.clone(), Some(db))
            }
            None => (
                format!("sqlite://{}/statecart.db", dir.path().display()),
                None,
            ),
        };
        let redis = target
            .redis_url
            .as_ref()
            .map(|url| (url.clone(), services::unique_redis_prefix()));
        Ok(Self {
            dir,
            database_url,
            backend: target.backend,
            cookie_revocation: target.cookie_revocation,
            redis,
            postgres,
        })
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The `STATECART_*` settings every instance of this sandbox gets.
    fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("listen", "127.0.0.1:0".to_owned()),
            ("data_dir", self.path().display().to_string()),
            ("database_url", self.database_url.clone()),
            ("session_backend", self.backend.as_str().to_owned()),
            // The scripted user logs in many times a minute from one address.
            ("login_rate_limit_per_minute", "0".to_owned()),
            ("cookie_revocation", self.cookie_revocation.to_string()),
        ];
        if let Some((url, prefix)) = &self.redis {
            settings.push(("redis_url", url.clone()));
            settings.push(("redis_key_prefix", prefix.clone()));
        }
        settings
    }

    /// Removes what lives outside the temp dir (database, Redis keys); the dir goes on drop.
    pub async fn cleanup(self) {
        if let Some(db) = self.postgres {
            db.drop_database().await;
        }
        if let Some((url, prefix)) = &self.redis {
            services::delete_redis_keys(url, prefix).await;
        }
    }
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

/// A running `statecart serve`; killed when dropped, so no run leaves a process behind.
pub struct Instance {
    child: Child,
    log: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Instance {
    /// Starts `binary serve` in `sandbox` as instance `name`, with `extra` settings on top, and
    /// waits until it logs the address it listens on.
    pub async fn start(
        binary: &Path,
        sandbox: &Sandbox,
        name: &str,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Self> {
        let log = sandbox.path().join(format!("{name}.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(binary);
        // Only the sandbox's settings: nothing leaks in from the environment of `compare`.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STATECART_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("serve")
            .env("RUST_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .env("STATECART_INSTANCE", name);
        for (key, value) in sandbox.settings().iter().chain(extra) {
            cmd.env(format!("STATECART_{}", key.to_ascii_uppercase()), value);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} serve", binary.display()))?;
        let mut instance = Self {
            child,
            log,
            base: String::new(),
        };
        instance.base = instance.wait_for_address().await?;
        Ok(instance)
    }

    async fn wait_for_address(&mut self) -> anyhow::Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(address) = text.lines().find_map(listening_address) {
                return Ok(address);
            }
            if let Some(status) = self.child.try_wait().context("checking the child")? {
                bail!(
                    "statecart serve exited ({status}) before listening; its log ends:\n{}",
                    tail(&text, 5)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "statecart serve did not log its address within {} s",
                    START_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The URL of `path` on this instance.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `signal` and waits (bounded) for the process to end.
    pub async fn stop(mut self, signal: Signal) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{}", signal.name()))
            .arg(self.child.id().to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{} {} failed", signal.name(), self.child.id());
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self
            .child
            .try_wait()
            .context("waiting for the child")?
            .is_none()
        {
            if Instant::now() >= deadline {
                bail!(
                    "statecart serve did not stop within {} s of {signal}",
                    STOP_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        Ok(())
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

/// `http://127.0.0.1:1234` from the startup log line `... listening on http://127.0.0.1:1234 ...`.
fn listening_address(line: &str) -> Option<String> {
    let rest = line.split("listening on ").nth(1)?;
    let address = rest.split_whitespace().next()?;
    address.starts_with("http://").then(|| address.to_owned())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), 100 when it cannot be asked.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&t| t > 0.0)
            .unwrap_or(100.0)
    })
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
