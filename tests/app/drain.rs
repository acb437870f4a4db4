//! Stopping without dropping: the real binary drains on SIGTERM (`/healthz` says so first,
//! every request sent is answered, exit 0), and a rolling restart of three instances behind a
//! health-checking balancer loses no request, no login and no acknowledged add.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use crate::{common, instances::shared};
use common::{
    Variant, balancer::Balancer, client, credentials, prepare, process::Instance, register_at,
};

/// The drain of the single-instance test: the default.
const DRAIN_SECS: &str = "5";
/// Concurrent request streams on the single instance.
const STREAMS: usize = 3;
/// Requests each stream sends once `/healthz` has said draining.
const AFTER_DRAIN: usize = 3;
/// How often the single-instance test asks `/healthz`.
const WATCH_EVERY: Duration = Duration::from_millis(20);
/// Upper bound of any wait or loop in these tests.
const BOUND: Duration = Duration::from_secs(120);

async fn while_draining_healthz_says_so_and_every_response_closes_its_connection(variant: Variant) {
    let app = common::spawn_app(variant).await;
    app.register("nell").await;
    let res = app.get("/cart").await;
    assert!(
        !closes(&res),
        "{variant:?}: connections are kept alive before the drain"
    );

    assert!(app.begin_drain(), "{variant:?}: the drain begins once");
    assert!(!app.begin_drain(), "{variant:?}: and only once");
    let res = app.get("/healthz").await;
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{variant:?}: healthz"
    );
    assert!(
        res.headers().contains_key("retry-after"),
        "{variant:?}: healthz"
    );
    assert!(closes(&res), "{variant:?}: healthz closes");
    let health: serde_json::Value = res.json().await.expect("json");
    assert_eq!(health["status"], "draining", "{variant:?}");
    // Still serving, every kind of answer, each closing its connection.
    for (path, status) in [
        ("/", StatusCode::OK),
        ("/products.json", StatusCode::OK),
        ("/cart", StatusCode::OK),
        ("/session.json", StatusCode::OK),
        ("/no-such-page", StatusCode::NOT_FOUND),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), status, "{variant:?}: {path} while draining");
        assert!(closes(&res), "{variant:?}: {path} closes its connection");
    }
    let res = app.add_to_cart(3, 1).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{variant:?}: an add while draining"
    );
    assert!(closes(&res), "{variant:?}: the add closes its connection");
    assert_eq!(
        app.cart_of(&app.client).await,
        [(3, 1)],
        "{variant:?}: and is kept"
    );
    assert!(
        app.is_logged_in(&app.client).await,
        "{variant:?}: still logged in"
    );
}

for_each_backend!(while_draining_healthz_says_so_and_every_response_closes_its_connection);

/// What one request of a stream got.
#[derive(Debug)]
struct Outcome {
    /// Sent after `/healthz` was seen saying draining.
    after_drain: bool,
    what: String,
    /// Status and whether the response said `Connection: close`; the error when unanswered.
    answer: Result<(StatusCode, bool), String>,
}

/// Whether `res` tells the client to close the connection.
fn closes(res: &reqwest::Response) -> bool {
    res.headers()
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// One stream: a logged-in shopper viewing the cart, the session and the catalog in turn,
/// until `/healthz` has said draining; then [`AFTER_DRAIN`] more requests, an add among them.
async fn stream(
    instance: String,
    name: String,
    draining: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Vec<Outcome> {
    let browser = client();
    register_at(&browser, &format!("{instance}/register"), &name).await;
    let mut outcomes = Vec::new();
    let mut after = 0;
    let deadline = Instant::now() + BOUND;
    for round in 0..10_000usize {
        if after == AFTER_DRAIN || Instant::now() > deadline {
            break;
        }
        let after_drain = draining.load(Ordering::Acquire);
        if after_drain {
            after += 1;
        }
        let (what, request) = match (after_drain, round % 3) {
            (true, _) if after == 1 => (
                "POST /cart/add",
                browser
                    .post(format!("{instance}/cart/add"))
                    .form(&[("product_id", "1"), ("quantity", "1")]),
            ),
            (_, 0) => ("GET /cart", browser.get(format!("{instance}/cart"))),
            (_, 1) => (
                "GET /session.json",
                browser.get(format!("{instance}/session.json")),
            ),
            _ => (
                "GET /products.json",
                browser.get(format!("{instance}/products.json")),
            ),
        };
        let answer = match request.send().await {
            Ok(res) => {
                let closed = closes(&res);
                let status = res.status();
                // The whole body: an answer cut off mid-body is no answer.
                match res.bytes().await {
                    Ok(_) => Ok((status, closed)),
                    Err(err) => Err(format!("body: {err}")),
                }
            }
            Err(err) => Err(format!("{err:?}")),
        };
        answered.fetch_add(1, Ordering::Relaxed);
        outcomes.push(Outcome {
            after_drain,
            what: what.to_owned(),
            answer,
        });
    }
    outcomes
}

/// What `/healthz` said, poll by poll, until it stopped answering: `(status, body status)`,
/// then `None` for the first poll that got no answer.
async fn watch_health(url: String, draining: Arc<AtomicBool>) -> Vec<Option<(StatusCode, String)>> {
    let checker = common::client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut seen = Vec::new();
    let deadline = Instant::now() + BOUND;
    for _ in 0..20_000 {
        if Instant::now() > deadline {
            break;
        }
        let answer = match checker.get(&url).send().await {
            Ok(res) => {
                let status = res.status();
                let body: serde_json::Value = res.json().await.unwrap_or_default();
                Some((
                    status,
                    body["status"].as_str().unwrap_or_default().to_owned(),
                ))
            }
            Err(_) => None,
        };
        if answer.as_ref().is_some_and(|(_, word)| word == "draining") {
            draining.store(true, Ordering::Release);
        }
        let ended = answer.is_none();
        seen.push(answer);
        if ended {
            break;
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
    seen
}

async fn sigterm_drains_first_and_answers_every_request_sent(variant: Variant) {
    let (settings, _data) = prepare(variant).await;
    let mut env = shared(&settings, "draining");
    env.push(("shutdown_drain_secs", DRAIN_SECS.to_owned()));
    let mut instance = Instance::start(&env).await;
    let draining = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn(watch_health(
        instance.url("/healthz"),
        Arc::clone(&draining),
    ));
    let streams: Vec<_> = (0..STREAMS)
        .map(|n| {
            tokio::spawn(stream(
                instance.address.clone(),
                format!("dora{n}"),
                Arc::clone(&draining),
                Arc::clone(&answered),
            ))
        })
        .collect();

    // The signal comes while the streams are busy.
    let deadline = Instant::now() + BOUND;
    while answered.load(Ordering::Relaxed) < 30 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    instance.terminate();
    let mut outcomes = Vec::new();
    for stream in streams {
        outcomes.extend(stream.await.expect("a stream ends"));
    }
    let health = watcher.await.expect("the watcher ends");
    let status = instance.exit_status().await;

    let unanswered: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !matches!(o.answer, Ok((s, _)) if !s.is_server_error()))
        .collect();
    assert!(
        unanswered.is_empty(),
        "{variant:?}: every request sent got an answer, none 5xx: {unanswered:?}"
    );
    let during: Vec<&Outcome> = outcomes.iter().filter(|o| o.after_drain).collect();
    assert_eq!(
        during.len(),
        STREAMS * AFTER_DRAIN,
        "{variant:?}: it went on serving while draining"
    );
    for outcome in &during {
        assert!(
            matches!(outcome.answer, Ok((_, true))),
            "{variant:?}: while draining every response closes its connection: {outcome:?}"
        );
        if outcome.what == "POST /cart/add" {
            assert!(
                matches!(outcome.answer, Ok((StatusCode::SEE_OTHER, _))),
                "{variant:?}: an add while draining is served: {outcome:?}"
            );
        }
    }

    // /healthz: 200, then 503 "draining", then no answer (never 200 again, never a bare stop).
    let first_down = health
        .iter()
        .position(|h| !matches!(h, Some((StatusCode::OK, _))))
        .expect("/healthz stopped answering 200");
    assert!(
        first_down > 0,
        "{variant:?}: /healthz was 200 before the signal"
    );
    let after: Vec<_> = health[first_down..].iter().collect();
    let (last, draining_polls) = after.split_last().expect("polls after the signal");
    assert!(
        last.is_none(),
        "{variant:?}: /healthz ended unanswered (the process stopped): {last:?}"
    );
    assert!(
        !draining_polls.is_empty()
            && draining_polls.iter().all(|h| matches!(
                h,
                Some((StatusCode::SERVICE_UNAVAILABLE, word)) if word == "draining"
            )),
        "{variant:?}: /healthz said 503 draining before the process stopped accepting: {after:?}"
    );

    assert!(status.success(), "{variant:?}: exit code 0, got {status}");
    let log = instance.log();
    let step = |words: &str| {
        log.iter()
            .position(|line| line.contains(words))
            .unwrap_or_else(|| panic!("{variant:?}: the log says {words:?}:\n{}", log.join("\n")))
    };
    let steps = [
        step("draining: /healthz answers 503"),
        step("stopping: no new connections"),
        step("closing the database pool"),
        step("stopped; exiting"),
    ];
    assert!(
        steps.is_sorted(),
        "{variant:?}: the steps in order: {steps:?}"
    );
}

for_each_backend!(sigterm_drains_first_and_answers_every_request_sent);

/// An operator who does not want to wait signals again: the drain ends at once. The drain
/// asked for here is ten minutes, far beyond how long a stop is awaited, so only the second
/// signal can make the process exit in time.
#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once() {
    let (settings, _data) = prepare(Variant::Sqlite).await;
    let mut env = shared(&settings, "impatient");
    env.push(("shutdown_drain_secs", "600".to_owned()));
    let mut instance = Instance::start(&env).await;
    instance.terminate();
    let checker = common::client_builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut draining = false;
    for _ in 0..200 {
        let res = checker.get(instance.url("/healthz")).send().await;
        if res.is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE) {
            draining = true;
            break;
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
    assert!(draining, "the first SIGTERM began the drain");
    instance.terminate();
    let status = instance.exit_status().await;
    assert!(status.success(), "exit code 0, got {status}");
    assert!(
        instance
            .log()
            .iter()
            .any(|line| line.contains("second signal: ending the drain now")),
        "the log says why the drain was short"
    );
}

// The rolling restart behind a balancer.

/// Instances behind the balancer.
const INSTANCES: usize = 3;
/// Scripted shoppers, as in the issue.
const SHOPPERS: usize = 12;
/// The drain of the balanced instances: thirty health checks long.
const FLEET_DRAIN_SECS: &str = "3";
/// Rounds after which a shopper logs out and in again (so logins cross restarts too).
const LOGIN_EVERY: usize = 10;
/// Upper bound of one shopper's rounds.
const MAX_ROUNDS: usize = 5_000;

/// What the shoppers saw, all together.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    unanswered: u64,
    server_errors: u64,
    logged_out: u64,
    lost_adds: u64,
    /// Requests answered, by `X-Statecart-Instance`.
    by_instance: BTreeMap<String, u64>,
    /// The first few failures, for the message.
    failures: Vec<String>,
}

impl Tally {
    /// Records a failure (the first few are quoted when the test fails).
    fn fail(&mut self, what: String) {
        if self.failures.len() < 10 {
            self.failures.push(what);
        }
    }
}

/// The shoppers' shared tally and the rounds done so far.
#[derive(Default)]
struct Shared {
    tally: Mutex<Tally>,
    rounds: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Tally) -> T) -> T {
        f(&mut self.tally.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sends `request`, counts its outcome and returns the response when it was answered
    /// without a 5xx (the body read whole).
    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Option<(StatusCode, reqwest::header::HeaderMap, String)> {
        let answer = match request.send().await {
            Ok(res) => {
                let (status, headers) = (res.status(), res.headers().clone());
                res.text()
                    .await
                    .map(|body| (status, headers, body))
                    .map_err(|e| format!("body: {e}"))
            }
            Err(err) => Err(format!("{err:?}")),
        };
        self.with(|t| {
            t.requests += 1;
            match answer {
                Err(err) => {
                    t.unanswered += 1;
                    t.fail(format!("{what}: unanswered: {err}"));
                    None
                }
                Ok((status, _, _)) if status.is_server_error() => {
                    t.server_errors += 1;
                    t.fail(format!("{what}: {status}"));
                    None
                }
                Ok((status, headers, body)) => {
                    let instance = headers
                        .get("x-statecart-instance")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_owned();
                    *t.by_instance.entry(instance).or_default() += 1;
                    Some((status, headers, body))
                }
            }
        })
    }
}

/// The cart `/session.json` shows and the user it names.
fn session_of(body: &str) -> (Option<String>, BTreeMap<i64, u64>) {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let cart = json["cart"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| Some((l["product_id"].as_i64()?, l["quantity"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    (json["user"].as_str().map(str::to_owned), cart)
}

/// A client for shopper `n`, which keeps cookies and does not follow redirects. Half the
/// shoppers keep their connection alive, so they stay with one instance until it drains and
/// says `Connection: close`; the other half open one per request, so the balancer spreads each
/// request (as nginx does over its own upstream connections).
fn shopper_client(n: usize) -> reqwest::Client {
    if n.is_multiple_of(2) {
        client()
    } else {
        common::client_builder()
            .cookie_store(true)
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
    }
}

/// Registers shopper `n` with `browser`; whether it was accepted.
async fn register_shopper(
    base: &str,
    n: usize,
    browser: &reqwest::Client,
    shared: &Shared,
) -> bool {
    let name = format!("shopper{n}");
    let register = browser
        .post(format!("{base}/register"))
        .form(&credentials(&name));
    let done = matches!(
        shared.send("register", register).await,
        Some((StatusCode::SEE_OTHER, ..))
    );
    if !done {
        shared.with(|t| t.fail(format!("{name}: register was refused")));
    }
    done
}

/// One registered shopper: rounds of add, view the cart, check the session (the same user,
/// every acknowledged add there), logging out and in every [`LOGIN_EVERY`] rounds (each
/// shopper at another round, so the password hashes of logins do not pile up).
async fn shopper(base: String, n: usize, browser: reqwest::Client, shared: Arc<Shared>) {
    let name = format!("shopper{n}");
    let url = |path: &str| format!("{base}{path}");
    let mut expected: BTreeMap<i64, u64> = BTreeMap::new();
    let deadline = Instant::now() + BOUND;
    for round in 0..MAX_ROUNDS {
        if shared.stop.load(Ordering::Acquire) || Instant::now() > deadline {
            break;
        }
        if (round + n) % LOGIN_EVERY == LOGIN_EVERY - 1 {
            // A login starts clean: the cart was the logged-out session's.
            shared.send("logout", browser.post(url("/logout"))).await;
            let login = browser.post(url("/login")).form(&credentials(&name));
            if !matches!(
                shared.send("login", login).await,
                Some((StatusCode::SEE_OTHER, ..))
            ) {
                shared.with(|t| t.fail(format!("{name}: login was refused")));
            }
            expected.clear();
        }
        let product = i64::try_from(round % LOGIN_EVERY).unwrap_or(0) + 1;
        let form = [
            ("product_id", product.to_string()),
            ("quantity", "1".to_owned()),
        ];
        let add = browser.post(url("/cart/add")).form(&form);
        match shared.send("add", add).await {
            Some((StatusCode::SEE_OTHER, ..)) => *expected.entry(product).or_default() += 1,
            Some((status, ..)) => shared.with(|t| t.fail(format!("{name}: add answered {status}"))),
            None => {}
        }
        shared.send("view cart", browser.get(url("/cart"))).await;
        if let Some((_, _, body)) = shared
            .send("session", browser.get(url("/session.json")))
            .await
        {
            let (user, cart) = session_of(&body);
            if user.as_deref() != Some(name.as_str()) {
                shared.with(|t| {
                    t.logged_out += 1;
                    t.fail(format!("{name}: logged out (user {user:?})"));
                });
                let login = browser.post(url("/login")).form(&credentials(&name));
                shared.send("login again", login).await;
            } else if cart != expected {
                shared.with(|t| {
                    t.lost_adds += 1;
                    t.fail(format!("{name}: cart {cart:?}, acknowledged {expected:?}"));
                });
            }
            // From here on, what the server shows (so one failure is counted once).
            expected = cart;
        }
        shared.rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits (bounded) until the shoppers have done `more` rounds beyond now.
async fn rounds_pass(shared: &Shared, more: u64) {
    let target = shared.rounds.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + BOUND;
    while shared.rounds.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_rolling_restart_behind_a_balancer_drops_nothing(variant: Variant) {
    let (settings, _data) = prepare(variant).await;
    let key = statecart::session::key::Keys::new_encoded();
    let env = |name: String| {
        let mut env = shared(&settings, &name);
        env.push(("session_key", key.clone()));
        env.push(("shutdown_drain_secs", FLEET_DRAIN_SECS.to_owned()));
        env
    };
    let names = ["a", "b", "c"];
    // One after another: the first creates and migrates the database the others share.
    let mut fleet = Vec::new();
    for name in names {
        fleet.push(Instance::start(&env(format!("{name}1"))).await);
    }
    let addresses: Vec<_> = fleet.iter().map(Instance::socket_address).collect();
    let balancer = Balancer::start(&addresses).await;
    for i in 0..INSTANCES {
        assert!(
            balancer.wait_until_healthy(i, BOUND).await,
            "instance {i} became healthy"
        );
    }

    // Registered one after another: twelve password hashes at once would meet the hashing
    // gate's designed 503 on a busy machine, which is not what this test is about.
    let shared_tally = Arc::new(Shared::default());
    let mut browsers = Vec::new();
    for n in 0..SHOPPERS {
        let browser = shopper_client(n);
        assert!(
            register_shopper(&balancer.address(), n, &browser, &shared_tally).await,
            "{variant:?}: shopper{n} registers"
        );
        browsers.push(browser);
    }
    let shoppers: Vec<_> = browsers
        .into_iter()
        .enumerate()
        .map(|(n, browser)| {
            tokio::spawn(shopper(
                balancer.address(),
                n,
                browser,
                Arc::clone(&shared_tally),
            ))
        })
        .collect();
    rounds_pass(&shared_tally, 3 * SHOPPERS as u64).await;

    // The rolling restart: SIGTERM, wait for the exit, start again, wait until healthy, next.
    for (i, name) in names.iter().enumerate() {
        fleet[i].terminate();
        let status = fleet[i].exit_status().await;
        assert!(
            status.success(),
            "{variant:?}: {name}1 exits 0, got {status}"
        );
        let again = Instance::start(&env(format!("{name}2"))).await;
        balancer.replace(i, again.socket_address());
        fleet[i] = again;
        assert!(
            balancer.wait_until_healthy(i, BOUND).await,
            "{variant:?}: {name}2 became healthy"
        );
        rounds_pass(&shared_tally, SHOPPERS as u64).await;
    }
    shared_tally.stop.store(true, Ordering::Release);
    for shopper in shoppers {
        tokio::time::timeout(BOUND, shopper)
            .await
            .expect("a shopper ends in time")
            .expect("a shopper ends");
    }

    let tally = shared_tally.with(std::mem::take);
    let seen = format!(
        "{variant:?}: {} requests, {} rounds; the balancer skipped {} connections past a \
         refusing instance and closed {} with no healthy instance; {tally:?}",
        tally.requests,
        shared_tally.rounds.load(Ordering::Relaxed),
        balancer.skipped(),
        balancer.dropped(),
    );
    assert_eq!(tally.unanswered, 0, "no request unanswered: {seen}");
    assert_eq!(tally.server_errors, 0, "no 5xx: {seen}");
    assert_eq!(tally.logged_out, 0, "nobody logged out: {seen}");
    assert_eq!(tally.lost_adds, 0, "no acknowledged add lost: {seen}");
    assert!(tally.failures.is_empty(), "nothing refused: {seen}");
    for name in names {
        for generation in ["1", "2"] {
            let instance = format!("{name}{generation}");
            assert!(
                tally.by_instance.get(&instance).is_some_and(|&n| n > 0),
                "{instance} answered shoppers (the restart happened under load): {seen}"
            );
        }
    }
}

// Memory cannot have a zero-downtime deploy (its sessions die with the process; README
// "Zero-downtime deploys"), so it is not run here.
for_backends!(a_rolling_restart_behind_a_balancer_drops_nothing => cookie, sqlite, postgres, redis);
