//! The typed results of a comparison run: what `report.json` holds (its tables are in `table`).

use serde::{Deserialize, Serialize};

use crate::config::SessionBackend;

/// Version of the `report.json` layout; raised when a field changes meaning.
pub const REPORT_VERSION: u32 = 1;

/// A whole comparison run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Layout version ([`REPORT_VERSION`]).
    pub version: u32,
    /// When the run finished (RFC 3339, UTC).
    pub generated_at: String,
    /// The machine it ran on.
    pub machine: Machine,
    /// How the speed experiment was run.
    pub load: LoadSettings,
    /// `cart_max_lines` of the compared config: the footprint reports the cart at this size.
    pub cart_max_lines: usize,
    /// Wall-clock seconds the whole run took.
    pub elapsed_secs: f64,
    /// One entry per compared backend, in the order asked for.
    pub backends: Vec<BackendReport>,
}

/// Where the numbers come from: timings mean little without it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPU cores the OS reports as available.
    pub cores: usize,
    /// `linux`, `macos`, ...
    pub os: String,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
    /// `debug` or `release`: the profile of the binary that served (it is this one).
    pub build: String,
}

/// The load generator's fixed shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSettings {
    /// Concurrent clients, all sharing one logged-in cookie.
    pub concurrency: usize,
    /// Seconds each scenario runs.
    pub duration_secs: u64,
}

/// The results for one backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendReport {
    /// `cookie`, `memory`, `database` or `redis`.
    pub backend: SessionBackend,
    /// The cookie backend with `cookie_revocation` on.
    #[serde(default)]
    pub cookie_revocation: bool,
    /// The name the test suite gives this setup: `cookie`, `memory`, `sqlite`, `postgres`
    /// (both the database backend) or `redis`.
    pub variant: String,
    /// Where its state lived in this run, e.g. "SQLite file" or "Redis at redis://...".
    pub store: String,
    /// Why the backend was not run (its service does not answer), if it was not.
    pub skipped: Option<String>,
    /// 1. SIGTERM, start again: what the same browser still has.
    pub restart: Outcome<Seen>,
    /// 2. SIGKILL, start again: what the same browser still has.
    pub crash: Outcome<Seen>,
    /// 3. Logged in on one instance, read on another sharing the config.
    pub instances: Outcome<Seen>,
    /// 4. A cookie saved before logout, sent again after it.
    pub logout_replay: Outcome<Replay>,
    /// 5. Soft state: idle past `idle_timeout_secs`.
    pub expiry: Outcome<Expiry>,
    /// 6. Bytes on the wire and on the server as the cart grows.
    pub footprint: Outcome<Footprint>,
    /// 7. Requests per second and latency.
    pub speed: Outcome<Speed>,
    /// 8. Changes sent at the same moment with one cookie: how many are kept.
    #[serde(default = "not_run")]
    pub parallel_writes: Outcome<ParallelWrites>,
    /// 9. Anonymous carts: what guests cost and what a restart leaves of them.
    #[serde(default = "not_run")]
    pub guests: Outcome<Guests>,
    /// 10. Two browsers of one user: the first ends the second from /account.
    #[serde(default = "not_run")]
    pub revoke_one: Outcome<RevokeOne>,
    /// 11. The fleet: what shoppers lose when an instance dies or a deploy rolls.
    #[serde(default = "not_run")]
    pub fleet: Outcome<Fleet>,
}

/// "Revoke one device": two browsers log in as one user, the first posts the "Log out" of the
/// second's row on /account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeOne {
    /// Sessions /account listed (0 where the backend cannot list them).
    pub listed: usize,
    /// The second browser was logged out afterwards.
    pub ended: bool,
    /// The first browser was still logged in afterwards.
    pub first_kept: bool,
}

/// How the fleet's balancer picks an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// The next instance for every request (no sticky sessions).
    RoundRobin,
    /// Each shopper's own instance while it is healthy (affinity).
    Sticky,
}

impl Routing {
    /// The report's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::Sticky => "sticky",
        }
    }
}

/// The fleet experiment: one entry per part and routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// `instance lost` and `rolling restart`, round-robin (and sticky on memory); on redis
    /// also `store failover`, on a Redis Cluster.
    pub parts: Vec<FleetPart>,
    /// Parts that could not run here, and why.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// What the shoppers of one fleet part saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetPart {
    /// `instance lost`, `rolling restart` or `store failover`.
    pub part: String,
    /// How the balancer routed.
    pub routing: Routing,
    /// Instances behind the balancer.
    pub instances: usize,
    /// Scripted shoppers.
    pub shoppers: usize,
    /// Requests sent.
    pub requests: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// Sent and never answered (or no instance would take them).
    pub unanswered: u64,
    /// Times a shopper found itself logged out.
    pub logouts: u64,
    /// Shoppers logged out at least once.
    pub shoppers_logged_out: usize,
    /// Acknowledged adds missing from the cart afterwards.
    pub adds_lost: u64,
    /// Seconds into the part when the disruption began.
    pub disrupted_at_secs: f64,
    /// Seconds the disruption took (kill and start again, or the whole rolling restart).
    pub disruption_secs: f64,
    /// Seconds from the disruption's start to the last failure seen (0: none).
    pub recovered_after_secs: f64,
    /// Requests answered well and not, per quarter second.
    pub timeline: Vec<FleetBucket>,
}

/// A quarter second of a fleet part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FleetBucket {
    /// Start of the bucket, seconds into the part.
    pub at_secs: f64,
    /// Requests answered below 500.
    pub ok: u32,
    /// 5xx, unanswered, logouts and losses seen.
    pub failed: u32,
}

/// Guests: anonymous visitors who each fill a small cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guests {
    /// Visitors.
    pub guests: usize,
    /// Cart lines each.
    pub lines_each: usize,
    /// Bytes of one guest's session cookie (`name=value`), on average.
    pub cookie_bytes: usize,
    /// Bytes the server says it keeps for one guest (`/session.json`).
    pub server_bytes_each: usize,
    /// How much the server process's resident memory grew while the guests shopped; `None`
    /// where the platform does not say.
    pub rss_growth_bytes: Option<u64>,
    /// Guests looked at again after a restart.
    pub sampled_after_restart: usize,
    /// Of those, the ones whose cart was still there.
    pub kept_after_restart: usize,
    /// New guests one address then tried to start within a minute (none keeping a cookie).
    #[serde(default)]
    pub flood_sent: usize,
    /// Of those, the ones refused with 429 by `guest_sessions_per_minute` (30).
    #[serde(default)]
    pub flood_refused: usize,
}

/// A report written before an experiment existed has no result for it.
fn not_run<T>() -> Outcome<T> {
    Outcome::Skipped("not part of this run".to_owned())
}

/// Parallel writes on one session: adds of different products sent at once, several rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParallelWrites {
    /// Requests sent at once in each round.
    pub parallel: usize,
    /// Rounds.
    pub rounds: usize,
    /// Adds answered 303 ("added").
    pub acknowledged: usize,
    /// Units in the cart afterwards.
    pub kept: usize,
    /// Acknowledged adds missing from the cart.
    pub lost: usize,
}

/// How one experiment went.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    /// It ran; these are the observations.
    Measured(T),
    /// It could not run to the end (a spawn failed, an unexpected status...): why.
    Failed(String),
    /// It was not run: why (the backend's service does not answer).
    Skipped(String),
}

impl<T> Outcome<T> {
    /// The observations, when the experiment ran.
    pub fn measured(&self) -> Option<&T> {
        match self {
            Self::Measured(t) => Some(t),
            _ => None,
        }
    }

    /// `Measured` or `Failed` from a result, keeping the error chain in one line.
    pub fn from_result(result: anyhow::Result<T>) -> Self {
        match result {
            Ok(t) => Self::Measured(t),
            Err(err) => Self::Failed(format!("{err:#}")),
        }
    }
}

/// What a browser's session looks like after something happened to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Whether the same user is still logged in.
    pub logged_in: bool,
    /// Cart lines seen now.
    pub cart_lines: usize,
    /// Cart lines before.
    pub cart_lines_before: usize,
    /// The same products and quantities as before.
    pub cart_intact: bool,
}

impl Seen {
    /// Login and the whole cart are still there.
    pub fn kept(&self) -> bool {
        self.logged_in && self.cart_intact
    }
}

/// What a cookie saved before logout is worth after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The browser that logged out is logged out (a sanity check of the run itself).
    pub logged_out: bool,
    /// The saved cookie, sent again, still logs in: the server could not revoke it.
    pub accepted: bool,
}

/// Soft state: a session left idle past its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Expiry {
    /// The instance's `idle_timeout_secs`.
    pub idle_timeout_secs: u64,
    /// Seconds actually left idle.
    pub idle_secs: f64,
    /// Logged in right before going idle.
    pub logged_in_before: bool,
    /// The session was gone afterwards.
    pub ended: bool,
}

/// Bytes a session costs as the cart grows, and where the cookie stops growing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    /// Units per cart line (one: the size depends on lines, barely on quantities).
    pub quantity_per_line: u32,
    /// Measurements, by ascending line count.
    pub points: Vec<FootprintPoint>,
    /// The probe that adds lines until the server refuses one (or the cap is reached).
    pub probe: Probe,
}

impl Footprint {
    /// The measurement at exactly `lines` cart lines.
    pub fn at(&self, lines: usize) -> Option<&FootprintPoint> {
        self.points.iter().find(|p| p.lines == lines)
    }
}

/// One footprint measurement, as `/session.json` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FootprintPoint {
    /// Cart lines.
    pub lines: usize,
    /// Bytes of the session cookie the browser sends (`name=value`).
    pub cookie_bytes: usize,
    /// Bytes the server keeps for the session (0 when it keeps nothing).
    pub server_bytes: usize,
}

/// Adding one more line at a time, with `cart_max_lines` raised out of the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Most lines tried.
    pub cap: usize,
    /// Lines the cart held at the end.
    pub accepted_lines: usize,
    /// The line count whose addition was refused, if one was.
    pub refused_at: Option<usize>,
    /// The status of that refusal (422 when the cookie would pass 4096 bytes).
    pub refusal_status: Option<u16>,
}

/// The speed experiment: one entry per scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speed {
    /// `GET /`, `GET /cart`, `POST /cart/add|update`.
    pub scenarios: Vec<ScenarioResult>,
}

/// Throughput and latency of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Short name: `home`, `cart_read`, `cart_write`.
    pub name: String,
    /// What it requests, e.g. `GET /`.
    pub request: String,
    /// `stateless`, `session read` or `session write`.
    pub kind: String,
    /// Requests answered with the expected status inside the measured window.
    pub requests: u64,
    /// Requests that failed or got another status.
    pub errors: u64,
    /// Seconds measured.
    pub secs: f64,
    /// Successful requests per second.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest request, milliseconds.
    pub max_ms: f64,
    /// CPU time the server process spent per answered request (user + system, from
    /// `/proc/<pid>/stat`), microseconds; `None` where the platform does not say.
    #[serde(default)]
    pub cpu_us_per_request: Option<f64>,
}

impl ScenarioResult {
    /// The CPU per request as the tables show it: `42.1`, or `n/a` where it was not measured.
    pub fn cpu_text(&self) -> String {
        self.cpu_us_per_request
            .map_or_else(|| "n/a".to_owned(), |us| format!("{us:.1}"))
    }
}

impl Speed {
    /// The scenario called `name`.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.name == name)
    }
}

/// What the backend table promises for one behaviour of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Login and cart survive SIGTERM + start.
    pub restart: bool,
    /// Login and cart survive SIGKILL + start.
    pub crash: bool,
    /// A login on one instance holds on another.
    pub instances: bool,
    /// A pre-logout cookie still logs in.
    pub replay_accepted: bool,
    /// Parallel changes of one session are all kept.
    pub parallel_lossless: bool,
    /// One session of a user can be ended from another (/account's "Log out").
    pub revoke_one: bool,
}

impl Expected {
    /// What [`SessionBackend::promises`] says of `backend` as configured.
    pub fn of(backend: SessionBackend, cookie_revocation: bool) -> Self {
        let p = crate::session::promises_as_configured(backend, cookie_revocation);
        Self {
            restart: p.survives_restart,
            crash: p.survives_crash,
            instances: p.shared_by_instances,
            replay_accepted: !p.revocable,
            parallel_lossless: p.parallel_writes_kept,
            revoke_one: p.revocable,
        }
    }
}

impl BackendReport {
    /// A backend that was not run, with the reason in every cell.
    pub fn skipped(backend: SessionBackend, variant: &str, store: String, reason: String) -> Self {
        Self {
            backend,
            cookie_revocation: false,
            variant: variant.to_owned(),
            store,
            restart: Outcome::Skipped(reason.clone()),
            crash: Outcome::Skipped(reason.clone()),
            instances: Outcome::Skipped(reason.clone()),
            logout_replay: Outcome::Skipped(reason.clone()),
            expiry: Outcome::Skipped(reason.clone()),
            footprint: Outcome::Skipped(reason.clone()),
            speed: Outcome::Skipped(reason.clone()),
            parallel_writes: Outcome::Skipped(reason.clone()),
            guests: Outcome::Skipped(reason.clone()),
            fleet: Outcome::Skipped(reason.clone()),
            revoke_one: Outcome::Skipped(reason.clone()),
            skipped: Some(reason),
        }
    }

    /// The same report, for the cookie backend with `cookie_revocation` as given.
    pub fn with_cookie_revocation(mut self, on: bool) -> Self {
        self.cookie_revocation = on;
        self
    }

    /// Experiments that failed to run, as `(experiment, why)`.
    pub fn failures(&self) -> Vec<(&'static str, &str)> {
        fn why<T>(o: &Outcome<T>) -> Option<&str> {
            match o {
                Outcome::Failed(why) => Some(why),
                _ => None,
            }
        }
        [
            ("restart", why(&self.restart)),
            ("crash", why(&self.crash)),
            ("2 instances", why(&self.instances)),
            ("logout replay", why(&self.logout_replay)),
            ("idle expiry", why(&self.expiry)),
            ("footprint", why(&self.footprint)),
            ("speed", why(&self.speed)),
            ("parallel writes", why(&self.parallel_writes)),
            ("guests", why(&self.guests)),
            ("fleet", why(&self.fleet)),
            ("revoke one device", why(&self.revoke_one)),
        ]
        .into_iter()
        .filter_map(|(name, why)| Some((name, why?)))
        .collect()
    }
}

impl Report {
    /// Every measured fleet part, with the variant it ran on, in report order.
    pub fn fleet_parts(&self) -> impl Iterator<Item = (&str, &FleetPart)> {
        self.backends.iter().flat_map(|b| {
            b.fleet
                .measured()
                .into_iter()
                .flat_map(|f| f.parts.iter().map(|p| (b.variant.as_str(), p)))
        })
    }

    /// What did not run, one sentence each: skipped backends, then failed experiments.
    pub fn notes(&self) -> Vec<String> {
        let skipped = self.backends.iter().filter_map(|b| {
            let why = b.skipped.as_ref()?;
            Some(format!("{} was skipped: {why}", b.variant))
        });
        let failed = self
            .failures()
            .into_iter()
            .map(|(backend, name, why)| format!("{backend} {name} failed: {why}"));
        let fleet = self.backends.iter().flat_map(|b| {
            b.fleet
                .measured()
                .into_iter()
                .flat_map(|f| f.notes.iter().map(|n| format!("{} fleet: {n}", b.variant)))
        });
        skipped.chain(failed).chain(fleet).collect()
    }

    /// Every failed experiment as `(variant, experiment, why)`.
    pub fn failures(&self) -> Vec<(&str, &'static str, &str)> {
        self.backends
            .iter()
            .flat_map(|b| {
                b.failures()
                    .into_iter()
                    .map(move |(name, why)| (b.variant.as_str(), name, why))
            })
            .collect()
    }
}

/// The cart sizes of the footprint table: the fixed steps and `cart_max_lines`.
pub fn footprint_sizes(report: &Report) -> Vec<usize> {
    let mut sizes = super::FOOTPRINT_STEPS.to_vec();
    sizes.push(report.cart_max_lines);
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seen_session_is_kept_only_with_its_whole_cart() {
        let seen = Seen {
            logged_in: true,
            cart_lines: 2,
            cart_lines_before: 3,
            cart_intact: false,
        };
        assert!(!seen.kept());
        assert!(
            Seen {
                cart_lines: 3,
                cart_intact: true,
                ..seen
            }
            .kept()
        );
    }
}
