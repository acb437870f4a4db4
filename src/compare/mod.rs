//! `statecart compare`: runs this very binary once per session backend and measures, as a
//! scripted user over real HTTP, what each keeps (restart, crash, two instances, logout,
//! idleness), what a session weighs, and how fast it serves; then writes `report.json` and a
//! self-contained `report.html`.

mod experiments;
mod fleet;
mod html;
mod load;
pub mod report;
pub mod table;
mod target;
mod user;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use self::{
    report::{BackendReport, LoadSettings, Machine, Outcome, REPORT_VERSION, Report},
    target::{Sandbox, Target},
};
use crate::{
    config::{Dialect, SessionBackend, Settings},
    sandbox::Signal,
};

/// Cart sizes the footprint always reports (plus `cart_max_lines`).
pub const FOOTPRINT_STEPS: [usize; 4] = [1, 5, 10, 20];

/// The file names written into `--out`.
pub const REPORT_JSON: &str = "report.json";
/// See [`REPORT_JSON`].
pub const REPORT_HTML: &str = "report.html";

/// Options of `statecart compare`. The services come from the usual settings:
/// `--database-url postgres://...` runs the database backend on PostgreSQL (a fresh database
/// per experiment, dropped afterwards), `--redis-url` names the Redis of the redis backend.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Backends to compare, comma-separated [default: cookie,memory,database,redis]
    #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
    pub backends: Vec<SessionBackend>,
    /// Folder for report.json and report.html [default: <data_dir>/compare, which /compare serves]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds each speed scenario runs (1 to 60)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub duration: u64,
    /// Concurrent clients of the speed experiment (1 to 256)
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Adds sent at once per round of the parallel-writes experiment (2 to 64)
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u16).range(2..=64))]
    pub parallel: u16,
    /// Anonymous carts of the guests experiment (10 to 100000)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    pub guests: u32,
}

fn parse_backend(value: &str) -> Result<SessionBackend, String> {
    SessionBackend::parse(value.trim()).ok_or_else(|| {
        format!("{value:?} is not a backend; allowed values: cookie, memory, database, redis")
    })
}

/// The folder `compare` writes to by default, and `/compare` serves from.
pub fn default_out_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("compare")
}

/// Runs the comparison with the binary that is running now.
pub async fn run(args: CompareArgs, settings: Settings) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("finding the statecart binary to start")?;
    compare(&binary, args, &settings).await
}

/// Runs the comparison, starting `binary serve` for every instance, and writes the report.
/// Fails (after writing it) when an experiment could not run; skipped backends are no failure.
pub async fn compare(binary: &Path, args: CompareArgs, settings: &Settings) -> anyhow::Result<()> {
    let started = Instant::now();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&settings.data_dir));
    let mut backends = args.backends.clone();
    if backends.is_empty() {
        backends = SessionBackend::ALL.to_vec();
    }
    let mut seen = Vec::new();
    backends.retain(|b| {
        let first = !seen.contains(b);
        seen.push(*b);
        first
    });
    let runner = Runner {
        binary: binary.to_owned(),
        concurrency: usize::from(args.concurrency),
        parallel: usize::from(args.parallel),
        guests: usize::try_from(args.guests).unwrap_or(1000),
        duration: Duration::from_secs(args.duration),
        cart_max_lines: settings.cart_max_lines,
    };
    // The cookie backend runs twice: as shipped, and with `cookie_revocation` on.
    let targets: Vec<Target> = backends
        .into_iter()
        .flat_map(|backend| {
            let revocation = if backend == SessionBackend::Cookie {
                vec![false, true]
            } else {
                vec![false]
            };
            revocation
                .into_iter()
                .map(move |cookie_revocation| (backend, cookie_revocation))
        })
        .map(|(backend, cookie_revocation)| Target {
            backend,
            postgres_url: (backend == SessionBackend::Database
                && settings.database_url.dialect() == Dialect::Postgres)
                .then(|| settings.database_url.as_str().to_owned()),
            redis_url: (backend == SessionBackend::Redis).then(|| settings.redis_url.clone()),
            cookie_revocation,
        })
        .collect();
    eprintln!(
        "compare: {} with {}; about {} s each",
        targets
            .iter()
            .map(Target::variant)
            .collect::<Vec<_>>()
            .join(", "),
        binary.display(),
        10 + 3 * args.duration
    );

    let mut reports = Vec::new();
    for target in &targets {
        reports.push(runner.backend(target).await);
    }

    let report = Report {
        version: REPORT_VERSION,
        generated_at: crate::domain::rfc3339(time::OffsetDateTime::now_utc().unix_timestamp())
            .unwrap_or_default(),
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .to_owned(),
        },
        load: LoadSettings {
            concurrency: runner.concurrency,
            duration_secs: args.duration,
        },
        cart_max_lines: settings.cart_max_lines,
        elapsed_secs: started.elapsed().as_secs_f64(),
        backends: reports,
    };
    write_report(&out, &report)?;
    println!("{}", report.to_text());
    println!(
        "Report: {} (and {REPORT_JSON}); took {:.0} s",
        out.join(REPORT_HTML).display(),
        report.elapsed_secs
    );
    let failures = report.failures();
    anyhow::ensure!(
        failures.is_empty(),
        "{} experiment(s) could not run: {}",
        failures.len(),
        failures
            .iter()
            .map(|(backend, name, _)| format!("{backend} {name}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn write_report(out: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::to_vec_pretty(report).context("encoding the report")?;
    let json_path = out.join(REPORT_JSON);
    std::fs::write(&json_path, json).with_context(|| format!("writing {}", json_path.display()))?;
    let html = html::render(report).context("rendering the report")?;
    let html_path = out.join(REPORT_HTML);
    std::fs::write(&html_path, html).with_context(|| format!("writing {}", html_path.display()))?;
    Ok(())
}

/// What every experiment of a run shares.
struct Runner {
    binary: PathBuf,
    concurrency: usize,
    parallel: usize,
    guests: usize,
    duration: Duration,
    cart_max_lines: usize,
}

impl Runner {
    /// Every experiment on one backend, each in a fresh sandbox; or the reason it is skipped.
    async fn backend(&self, target: &Target) -> BackendReport {
        let backend = target.backend;
        let variant = target.variant();
        let store = target.store();
        eprintln!("\ncompare: {variant}: {backend} backend, {store}");
        if let Err(reason) = target.check_reachable().await {
            eprintln!("compare: {variant}: skipped: {reason}");
            return BackendReport::skipped(backend, variant, store, reason)
                .with_cookie_revocation(target.cookie_revocation);
        }
        let bin = self.binary.as_path();
        let parallel = self.parallel;
        let guest_count = self.guests;
        let max = self.cart_max_lines;
        let restart = self
            .step(target, "restart (SIGTERM)", async |sb| {
                experiments::survive(bin, sb, Signal::Term).await
            })
            .await;
        let crash = self
            .step(target, "crash (SIGKILL)", async |sb| {
                experiments::survive(bin, sb, Signal::Kill).await
            })
            .await;
        let instances = self
            .step(target, "two instances", async |sb| {
                experiments::two_instances(bin, sb).await
            })
            .await;
        let logout_replay = self
            .step(target, "logout replay", async |sb| {
                experiments::logout_replay(bin, sb).await
            })
            .await;
        let expiry = self
            .step(target, "idle expiry", async |sb| {
                experiments::expiry(bin, sb).await
            })
            .await;
        let parallel_writes = self
            .step(target, "parallel writes", async |sb| {
                experiments::parallel_writes(bin, sb, parallel).await
            })
            .await;
        let guests = self
            .step(target, "guests", async |sb| {
                experiments::guests(bin, sb, guest_count).await
            })
            .await;
        let fleet = self
            .step(target, "fleet", async |sb| {
                fleet::experiment(bin, sb, backend).await
            })
            .await;
        let revoke_one = self
            .step(target, "revoke one device", async |sb| {
                experiments::revoke_one(bin, sb).await
            })
            .await;
        let footprint = self
            .step(target, "footprint", async |sb| {
                experiments::footprint(bin, sb, max).await
            })
            .await;
        let speed = self
            .step(target, "speed", async |sb| {
                load::speed(bin, sb, self.concurrency, self.duration, |line| {
                    eprintln!("compare: {variant}:   {line}");
                })
                .await
            })
            .await;
        BackendReport {
            backend,
            cookie_revocation: target.cookie_revocation,
            variant: variant.to_owned(),
            store,
            skipped: None,
            restart,
            crash,
            instances,
            logout_replay,
            expiry,
            footprint,
            speed,
            parallel_writes,
            guests,
            fleet,
            revoke_one,
        }
    }

    /// Runs one experiment in a fresh sandbox, removes the sandbox, and says how it went.
    async fn step<T: Said>(
        &self,
        target: &Target,
        label: &str,
        experiment: impl AsyncFnOnce(&Sandbox) -> anyhow::Result<T>,
    ) -> Outcome<T> {
        let began = Instant::now();
        let result = async {
            let sandbox = Sandbox::create(target).await?;
            let result = experiment(&sandbox).await;
            sandbox.cleanup().await;
            result
        }
        .await;
        let outcome = Outcome::from_result(result);
        let said = match &outcome {
            Outcome::Measured(t) => t.said(),
            Outcome::Failed(why) => format!("FAILED: {why}"),
            Outcome::Skipped(why) => format!("skipped: {why}"),
        };
        eprintln!(
            "compare: {}: {label}: {said} ({:.1} s)",
            target.variant(),
            began.elapsed().as_secs_f64()
        );
        outcome
    }
}

/// What an experiment's result says on the progress line.
trait Said {
    fn said(&self) -> String;
}

impl Said for report::Seen {
    fn said(&self) -> String {
        format!(
            "logged in: {}, cart {} of {} lines",
            if self.logged_in { "yes" } else { "no" },
            self.cart_lines,
            self.cart_lines_before
        )
    }
}

impl Said for report::Replay {
    fn said(&self) -> String {
        if self.accepted {
            "the saved cookie is still accepted".to_owned()
        } else {
            "the saved cookie is rejected".to_owned()
        }
    }
}

impl Said for report::Expiry {
    fn said(&self) -> String {
        format!(
            "after {:.1} s idle (timeout {} s) the session {}",
            self.idle_secs,
            self.idle_timeout_secs,
            if self.ended {
                "has ended"
            } else {
                "is still on"
            }
        )
    }
}

impl Said for report::ParallelWrites {
    fn said(&self) -> String {
        format!(
            "{} rounds of {} adds at once: {} acknowledged, {} lost",
            self.rounds, self.parallel, self.acknowledged, self.lost
        )
    }
}

impl Said for report::Guests {
    fn said(&self) -> String {
        format!(
            "{} guests with {} lines: cookie {} B, server {} B each, RSS +{}; \
             {} of {} carts after a restart; {} of {} new guests from one address refused",
            self.guests,
            self.lines_each,
            self.cookie_bytes,
            self.server_bytes_each,
            table::measured_bytes(self.rss_growth_bytes),
            self.kept_after_restart,
            self.sampled_after_restart,
            self.flood_refused,
            self.flood_sent
        )
    }
}

impl Said for report::Fleet {
    fn said(&self) -> String {
        self.parts
            .iter()
            .map(|p| {
                format!(
                    "{} ({}): {} requests, {} 5xx, {} unanswered, {} logged out, {} adds lost, \
                     well again after {:.1} s",
                    p.part,
                    p.routing.as_str(),
                    p.requests,
                    p.server_errors,
                    p.unanswered,
                    p.shoppers_logged_out,
                    p.adds_lost,
                    p.recovered_after_secs
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Said for report::RevokeOne {
    fn said(&self) -> String {
        match (self.listed, self.ended) {
            (0, _) => "/account lists no sessions: nothing to end".to_owned(),
            (n, true) => format!("{n} sessions listed; the other one ended"),
            (n, false) => format!("{n} sessions listed; the other one is still logged in"),
        }
    }
}

impl Said for report::Footprint {
    fn said(&self) -> String {
        let at = self.points.last().map_or_else(String::new, |p| {
            format!(
                "at {} lines cookie {} B, server {} B; ",
                p.lines, p.cookie_bytes, p.server_bytes
            )
        });
        match self.probe.refused_at {
            Some(n) => format!(
                "{at}line {n} refused ({})",
                self.probe.refusal_status.unwrap_or_default()
            ),
            None => format!("{at}all {} lines accepted", self.probe.cap),
        }
    }
}

impl Said for report::Speed {
    fn said(&self) -> String {
        "done".to_owned()
    }
}
