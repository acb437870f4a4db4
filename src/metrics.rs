//! The metrics of one running app, kept in a `prometheus` registry of its own and served as
//! Prometheus text by `GET /metrics`.
//!
//! Each [`Application`](crate::Application) owns one [`Metrics`], not a process-wide
//! registry: tests (and anyone embedding the app) run several apps in one process, and a global
//! recorder would mix their series. Code that runs inside a request (the session store, the
//! write path, logins, the password-hashing queue) reaches the request's app through a task-local
//! set by the request middleware, so instrumenting it is one call such as [`cas_conflict`] with
//! nothing threaded through signatures; outside a request those calls do nothing.
//!
//! Every label takes values from a small fixed set (route *patterns*, a method list, status
//! codes the app answers, backend and operation names), so no request can add series at will.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, PullingGauge, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{Counter, Metric, MetricFamily, MetricType},
};

use crate::{config::SessionBackend, domain::snapshot::Catalog, leases::LiveHub};

/// The label value of every path no route matches: random paths share one series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Request latencies, in seconds: from a cached page (well under a millisecond) to a request
/// that waited on a slow store.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Session-store operations: memory answers in microseconds, SQL and Redis in about a
/// millisecond, a store in trouble in seconds (the 2-second command timeout of Redis).
const STORE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];

/// Waits for a password-hashing slot: none while a core is free, up to the gate's 2-second
/// limit when every core hashes.
const HASH_WAIT_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0];

/// What became of one `POST /login`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Logged in.
    Ok,
    /// Unknown user or wrong password (the page does not tell which; neither does this).
    WrongCredentials,
    /// Refused with 429 before any hashing: too many attempts from the address or failures on
    /// the account.
    Throttled,
    /// Every password-hashing slot stayed busy: 503.
    Busy,
    /// The database did not answer.
    Error,
}

impl LoginOutcome {
    const ALL: [Self; 5] = [
        Self::Ok,
        Self::WrongCredentials,
        Self::Throttled,
        Self::Busy,
        Self::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::WrongCredentials => "wrong_credentials",
            Self::Throttled => "throttled",
            Self::Busy => "busy",
            Self::Error => "error",
        }
    }
}

/// One kind of session-store operation, as the store-latency histogram labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Reading a session and its version.
    Load,
    /// Writing one: a new session, or a compare-and-set onto a version.
    Save,
    /// Ending sessions (logout, revocation).
    Delete,
    /// Listing a user's sessions (/account).
    List,
}

impl StoreOp {
    const ALL: [Self; 4] = [Self::Load, Self::Save, Self::Delete, Self::List];

    fn label(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Save => "save",
            Self::Delete => "delete",
            Self::List => "list",
        }
    }
}

/// The registry of one app and the instruments the code records into.
pub struct Metrics {
    registry: Registry,
    backend: SessionBackend,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    store_ops: HistogramVec,
    cas_conflicts: IntCounter,
    cas_retries: IntCounter,
    cas_given_up: IntCounter,
    guests_refused: IntCounter,
    logins: IntCounterVec,
    hash_wait: Histogram,
    /// Sessions and guest sessions the memory backend holds (only that backend counts them
    /// cheaply: SQL would need a `COUNT(*)` per scrape, Redis a key scan).
    memory_sessions: Option<(IntGauge, IntGauge)>,
}

impl Metrics {
    /// Every family of one app. The live-lease series and the catalog's are read from `hub`
    /// and `catalog` at each scrape; label sets known in advance start at zero, so a dashboard
    /// shows a flat line rather than nothing.
    pub fn new(
        backend: SessionBackend,
        hub: Arc<LiveHub>,
        catalog: Arc<Catalog>,
    ) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "statecart_http_requests_total",
                "HTTP requests answered, by matched route pattern, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "statecart_http_request_duration_seconds",
                "Time to answer an HTTP request (until the response head), by route, method and status.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["route", "method", "status"],
        )?;
        let store_ops = HistogramVec::new(
            HistogramOpts::new(
                "statecart_session_store_duration_seconds",
                "Session-store operations by backend and operation (load, save, delete, list).",
            )
            .buckets(STORE_BUCKETS.to_vec()),
            &["backend", "operation"],
        )?;
        let by_backend = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help).const_label("backend", backend.as_str()))
        };
        let cas_conflicts = by_backend(
            "statecart_session_cas_conflicts_total",
            "Compare-and-set saves of a session that found a newer version saved first.",
        )?;
        let cas_retries = by_backend(
            "statecart_session_cas_retries_total",
            "Session changes run again on fresher state after a conflict.",
        )?;
        let cas_given_up = by_backend(
            "statecart_session_cas_given_up_total",
            "Session changes given up after too many conflicts (answered 503 with Retry-After).",
        )?;
        let guests_refused = IntCounter::new(
            "statecart_guest_sessions_refused_total",
            "New guest sessions refused: too many from the client address (429), or the store full (503).",
        )?;
        let logins = IntCounterVec::new(
            Opts::new(
                "statecart_logins_total",
                "Login attempts by outcome: ok, wrong_credentials, throttled, busy, error.",
            ),
            &["outcome"],
        )?;
        let hash_wait = Histogram::with_opts(
            HistogramOpts::new(
                "statecart_password_hash_queue_wait_seconds",
                "Time a password hash (login, register) waited for a hashing slot.",
            )
            .buckets(HASH_WAIT_BUCKETS.to_vec()),
        )?;

        for outcome in LoginOutcome::ALL {
            logins.with_label_values(&[outcome.label()]);
        }
        if backend.is_stateful() {
            for op in StoreOp::ALL {
                store_ops.with_label_values(&[backend.as_str(), op.label()]);
            }
        }
        let memory_sessions = if backend == SessionBackend::Memory {
            Some((
                IntGauge::new(
                    "statecart_memory_sessions",
                    "Sessions the memory backend holds now, guests included.",
                )?,
                IntGauge::new(
                    "statecart_memory_guest_sessions",
                    "Guest sessions the memory backend holds now.",
                )?,
            ))
        } else {
            None
        };

        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(store_ops.clone()))?;
        registry.register(Box::new(cas_conflicts.clone()))?;
        registry.register(Box::new(cas_retries.clone()))?;
        registry.register(Box::new(cas_given_up.clone()))?;
        registry.register(Box::new(guests_refused.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(hash_wait.clone()))?;
        if let Some((held, guests)) = &memory_sessions {
            registry.register(Box::new(held.clone()))?;
            registry.register(Box::new(guests.clone()))?;
        }
        // The series /metrics had before this registry, under the same names.
        let leases = Arc::clone(&hub);
        registry.register(Box::new(PullingGauge::new(
            "statecart_live_leases_active",
            "Live-update leases held by this process now.",
            Box::new(move || leases.active() as f64),
        )?))?;
        let events = Arc::clone(&hub);
        registry.register(Box::new(PullingCounter::new(
            "statecart_live_events_sent_total",
            "Change events sent to live subscribers.",
            move || events.metrics.events_sent(),
        )?))?;
        registry.register(Box::new(PullingCounter::new(
            "statecart_live_leases_expired_total",
            "Leases that ended (by time, eviction or disconnect).",
            move || hub.metrics.leases_expired(),
        )?))?;
        let clock = Arc::clone(&catalog);
        registry.register(Box::new(PullingGauge::new(
            "statecart_catalog_version",
            "The catalog clock this instance's snapshot was read at.",
            // A version is a row count of changes, far below 2^53: exact as a float.
            Box::new(move || clock.now().version as f64),
        )?))?;
        registry.register(Box::new(PullingCounter::new(
            "statecart_catalog_rebuilds_total",
            "Catalog snapshots built (the first at start, then one per catalog change seen).",
            move || catalog.rebuilds(),
        )?))?;

        Ok(Self {
            registry,
            backend,
            http_requests,
            http_duration,
            store_ops,
            cas_conflicts,
            cas_retries,
            cas_given_up,
            guests_refused,
            logins,
            hash_wait,
            memory_sessions,
        })
    }

    /// Counts one answered request. `route` is the matched pattern (never the raw path), or
    /// `None` for a path no route matched.
    pub fn observe_request(
        &self,
        route: Option<&str>,
        method: &actix_web::http::Method,
        status: u16,
        took: Duration,
    ) {
        let status = status_label(status);
        let labels = [
            route.unwrap_or(UNMATCHED_ROUTE),
            method_label(method),
            status.as_str(),
        ];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    /// Sets the memory backend's session gauges (read at scrape time).
    pub fn set_memory_sessions(&self, held: u64, guests: u64) {
        if let Some((held_gauge, guests_gauge)) = &self.memory_sessions {
            held_gauge.set(i64::try_from(held).unwrap_or(i64::MAX));
            guests_gauge.set(i64::try_from(guests).unwrap_or(i64::MAX));
        }
    }

    /// Every family in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a malformed family, which the registry refuses
        // at registration; an empty scrape is the honest answer if it ever did.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "could not encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The method label: the methods HTTP defines, every other token as `other`, so odd
/// methods cannot add series.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The status label: the code itself. The app answers a short fixed list of codes, so the
/// exact one (a 503 told apart from a 500) costs no cardinality.
fn status_label(status: u16) -> String {
    status.to_string()
}

/// A counter whose value is read at each scrape from a function, for totals an existing part
/// of the app already keeps (the live-lease hub, the catalog): the counterpart of
/// [`PullingGauge`], which `prometheus` has only for gauges.
struct PullingCounter {
    desc: Desc,
    value: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl PullingCounter {
    fn new(
        name: &str,
        help: &str,
        value: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> prometheus::Result<Self> {
        Ok(Self {
            desc: Desc::new(name.into(), help.into(), Vec::new(), Default::default())?,
            value: Box::new(value),
        })
    }
}

impl Collector for PullingCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut counter = Counter::default();
        // Counts of events in one process: exact as a float far beyond any real uptime.
        counter.set_value((self.value)() as f64);
        let mut metric = Metric::default();
        metric.set_counter(counter);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

tokio::task_local! {
    /// The metrics of the app serving the current request.
    static CURRENT: Arc<Metrics>;
}

/// Runs `request` with `metrics` as the current app's: the calls below record into it.
pub async fn scope<F: std::future::Future>(metrics: Arc<Metrics>, request: F) -> F::Output {
    CURRENT.scope(metrics, request).await
}

/// Records into the current request's app, if any.
fn with(record: impl FnOnce(&Metrics)) {
    let _ = CURRENT.try_with(|metrics| record(metrics));
}

/// A new guest session was refused: its address started too many (429), or the store holds
/// `max_guest_sessions` guests (503).
pub fn guest_refused() {
    with(|m| m.guests_refused.inc());
}

/// A compare-and-set save found a newer version of the session saved first.
pub fn cas_conflict() {
    with(|m| m.cas_conflicts.inc());
}

/// A session change runs again, on fresher state, after a conflict.
pub fn cas_retry() {
    with(|m| m.cas_retries.inc());
}

/// A session change was given up after too many conflicts (the request gets 503).
pub fn cas_given_up() {
    with(|m| m.cas_given_up.inc());
}

/// Counts one login by what became of it.
pub fn login(outcome: LoginOutcome) {
    with(|m| m.logins.with_label_values(&[outcome.label()]).inc());
}

/// Counts a login by the answer `authenticate` gave, and hands the answer on unchanged.
pub fn counted_login<T>(
    answer: Result<Option<T>, crate::domain::accounts::AuthError>,
) -> Result<Option<T>, crate::domain::accounts::AuthError> {
    use crate::domain::accounts::AuthError;
    login(match &answer {
        Ok(Some(_)) => LoginOutcome::Ok,
        Ok(None) => LoginOutcome::WrongCredentials,
        Err(AuthError::Busy(_)) => LoginOutcome::Busy,
        Err(_) => LoginOutcome::Error,
    });
    answer
}

/// A password hash waited this long for a slot (or gave up after it).
pub fn hash_queue_wait(waited: Duration) {
    with(|m| m.hash_wait.observe(waited.as_secs_f64()));
}

/// Times one session-store operation until the returned guard drops. The cookie backend keeps
/// nothing on the server, so nothing is timed for it.
pub fn store_op(op: StoreOp) -> StoreTimer {
    let target = CURRENT
        .try_with(|m| {
            m.backend.is_stateful().then(|| {
                m.store_ops
                    .with_label_values(&[m.backend.as_str(), op.label()])
            })
        })
        .ok()
        .flatten();
    StoreTimer {
        target,
        started: Instant::now(),
    }
}

/// Records a store operation's duration when dropped (see [`store_op`]).
pub struct StoreTimer {
    target: Option<Histogram>,
    started: Instant,
}

impl Drop for StoreTimer {
    fn drop(&mut self) {
        if let Some(histogram) = &self.target {
            histogram.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::DatabaseUrl, db::Db};

    /// An app's metrics over a fresh catalog; the folder holds its SQLite file.
    async fn metrics(backend: SessionBackend) -> (Metrics, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&DatabaseUrl::sqlite_file(&dir.path().join("m.db")))
            .await
            .expect("db");
        db.migrate().await.expect("migrations");
        let catalog = Catalog::load(db).await.expect("catalog");
        let metrics = Metrics::new(backend, LiveHub::new(10, 2), catalog).expect("metrics");
        (metrics, dir)
    }

    #[tokio::test]
    async fn odd_methods_share_one_label() {
        let (m, _dir) = metrics(SessionBackend::Memory).await;
        for method in ["PROPFIND", "BREW", "X-ANYTHING"] {
            let method = actix_web::http::Method::from_bytes(method.as_bytes()).expect("token");
            m.observe_request(None, &method, 404, Duration::from_millis(1));
        }
        let text = m.render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("statecart_http_requests_total{"))
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(r#"method="other""#), "{lines:?}");
        assert!(lines[0].contains(r#"route="unmatched""#), "{lines:?}");
        assert!(lines[0].ends_with(" 3"), "{lines:?}");
    }

    #[test]
    fn calls_outside_a_request_record_nothing_and_do_not_panic() {
        cas_conflict();
        guest_refused();
        drop(store_op(StoreOp::Load));
    }

    #[tokio::test]
    async fn calls_inside_a_scope_record_into_that_app_only() {
        let (one, _a) = metrics(SessionBackend::Database).await;
        let (other, _b) = metrics(SessionBackend::Database).await;
        let one = Arc::new(one);
        scope(Arc::clone(&one), async {
            cas_conflict();
            guest_refused();
            login(LoginOutcome::Busy);
            drop(store_op(StoreOp::Save));
        })
        .await;
        let text = one.render();
        assert!(text.contains("statecart_session_cas_conflicts_total{backend=\"database\"} 1"));
        assert!(text.contains("statecart_guest_sessions_refused_total 1"));
        assert!(text.contains("statecart_logins_total{outcome=\"busy\"} 1"));
        assert!(text.contains(
            "statecart_session_store_duration_seconds_count{backend=\"database\",operation=\"save\"} 1"
        ));
        let untouched = other.render();
        assert!(
            untouched.contains("statecart_session_cas_conflicts_total{backend=\"database\"} 0")
        );
        assert!(untouched.contains("statecart_guest_sessions_refused_total 0"));
    }

    #[tokio::test]
    async fn the_catalog_and_leases_are_read_at_scrape_time() {
        let (m, _dir) = metrics(SessionBackend::Cookie).await;
        let text = m.render();
        assert!(
            text.contains("statecart_catalog_rebuilds_total 1"),
            "{text}"
        );
        assert!(text.contains("statecart_live_leases_active 0"), "{text}");
        assert!(
            text.contains("# TYPE statecart_live_events_sent_total counter"),
            "{text}"
        );
        // The cookie backend keeps nothing on the server: no store latency to show.
        assert!(!text.contains("statecart_session_store_duration_seconds_count"));
    }
}
