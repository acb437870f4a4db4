//! Experiment 7, speed: a small, bounded load generator. A fixed number of clients share one
//! logged-in cookie and send requests back to back for a fixed time; latencies go into an HDR
//! histogram. Only ever aimed at the instance this run started on 127.0.0.1.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use tokio::{sync::Barrier, task::JoinSet};

use super::{
    report::{ScenarioResult, Speed},
    target::Sandbox,
    user::{self, Browser},
};
use crate::sandbox::{Instance, Signal};

/// Unmeasured requests per client before each scenario: connections open, caches warm.
const WARMUP_REQUESTS: u64 = 10;
/// Upper bound of requests per client and scenario, whatever the duration.
const MAX_REQUESTS_PER_CLIENT: u64 = 2_000_000;
/// Largest latency the histogram records, in microseconds (the client times out first).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Products the write scenario changes: the seed products with ample stock, so the quantity
/// a race can pile up on one line never reaches the stock.
const WRITE_PRODUCTS: [i64; 8] = [1, 2, 5, 6, 9, 10, 13, 14];

/// What a scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `GET /` without a cookie: the stateless half.
    Home,
    /// `GET /cart`: the session is read (and the cart priced from the catalog).
    CartRead,
    /// `POST /cart/add` then `POST /cart/update` back: the session is written each time.
    CartWrite,
}

impl Scenario {
    const ALL: [Self; 3] = [Self::Home, Self::CartRead, Self::CartWrite];

    fn name(self) -> &'static str {
        match self {
            Self::Home => "home",
            Self::CartRead => "cart_read",
            Self::CartWrite => "cart_write",
        }
    }

    fn request(self) -> &'static str {
        match self {
            Self::Home => "GET /",
            Self::CartRead => "GET /cart",
            Self::CartWrite => "POST /cart/add|update",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Home => "stateless",
            Self::CartRead => "session read",
            Self::CartWrite => "session write",
        }
    }

    /// The `i`-th request of client `client`, and the status that counts as success.
    fn build(
        self,
        http: &reqwest::Client,
        base: &str,
        client: usize,
        i: u64,
    ) -> (reqwest::RequestBuilder, StatusCode) {
        match self {
            Self::Home => (http.get(format!("{base}/")), StatusCode::OK),
            Self::CartRead => (http.get(format!("{base}/cart")), StatusCode::OK),
            Self::CartWrite => {
                let product = WRITE_PRODUCTS[client % WRITE_PRODUCTS.len()].to_string();
                // Add one, then set the line back to one: the cart never grows.
                let path = if i.is_multiple_of(2) {
                    "/cart/add"
                } else {
                    "/cart/update"
                };
                let form = [("product_id", product), ("quantity", "1".to_owned())];
                (
                    http.post(format!("{base}{path}")).form(&form),
                    StatusCode::SEE_OTHER,
                )
            }
        }
    }
}

/// Starts one instance, logs in, puts one line per write product in the cart, then runs each
/// scenario for `duration` with `concurrency` clients.
pub async fn speed(
    binary: &Path,
    sandbox: &Sandbox,
    concurrency: usize,
    duration: Duration,
    progress: impl Fn(&str),
) -> anyhow::Result<Speed> {
    let browser = Browser::new()?;
    let one = sandbox.start(binary, "one", &[]).await?;
    browser.register(&one, "edsger").await?;
    for id in WRITE_PRODUCTS {
        let status = browser.add(&one, id, 1).await?;
        ensure!(
            status == StatusCode::SEE_OTHER,
            "POST /cart/add (product {id}) answered {status}"
        );
    }
    let mut scenarios = Vec::new();
    for scenario in Scenario::ALL {
        // Read the session first, so its last-activity stamp is fresh and the cookie current:
        // the clients then replay exactly what a browser would send now.
        browser.session(&one).await?;
        let http = match scenario {
            Scenario::Home => user::anonymous_client(concurrency)?,
            _ => user::client_with_cookie(&browser.cookie(&one)?, concurrency)?,
        };
        let result = run(scenario, &http, &one, concurrency, duration).await?;
        progress(&format!(
            "{:<30} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  CPU {} us/req  errors {}",
            result.request,
            result.rps,
            result.p50_ms,
            result.p99_ms,
            result.cpu_text(),
            result.errors
        ));
        scenarios.push(result);
    }
    one.stop(Signal::Term).await?;
    Ok(Speed { scenarios })
}

/// One client's tally.
struct Tally {
    latencies: Histogram<u64>,
    errors: u64,
}

async fn run(
    scenario: Scenario,
    http: &reqwest::Client,
    server: &Instance,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<ScenarioResult> {
    let base = server.base();
    let start = Arc::new(Barrier::new(concurrency + 1));
    let mut clients = JoinSet::new();
    for client in 0..concurrency {
        let http = http.clone();
        let base = base.to_owned();
        let start = Arc::clone(&start);
        // Made here, not in the task: a task must not fail before it reaches the barrier.
        let mut tally = Tally {
            latencies: histogram()?,
            errors: 0,
        };
        clients.spawn(async move {
            for i in 0..WARMUP_REQUESTS {
                let (request, _) = scenario.build(&http, &base, client, i);
                if let Ok(res) = request.send().await {
                    let _ = res.bytes().await;
                }
            }
            start.wait().await;
            let deadline = Instant::now() + duration;
            for i in 0..MAX_REQUESTS_PER_CLIENT {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let (request, expected) = scenario.build(&http, &base, client, i);
                let ok = match request.send().await {
                    Ok(res) => res.status() == expected && res.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    tally.latencies.saturating_record(micros.max(1));
                } else {
                    tally.errors += 1;
                }
            }
            tally
        });
    }
    start.wait().await;
    let began = Instant::now();
    let cpu_before = server.cpu_time();
    let mut latencies = histogram()?;
    let mut errors = 0;
    while let Some(joined) = clients.join_next().await {
        let tally = joined.context("a load client panicked")?;
        latencies
            .add(&tally.latencies)
            .context("merging histograms")?;
        errors += tally.errors;
    }
    let secs = began.elapsed().as_secs_f64();
    let cpu = server
        .cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let requests = latencies.len();
    let ms = |us: u64| {
        let us = us as f64;
        us / 1000.0
    };
    let rps = if secs > 0.0 {
        requests as f64 / secs
    } else {
        0.0
    };
    Ok(ScenarioResult {
        name: scenario.name().to_owned(),
        request: scenario.request().to_owned(),
        kind: scenario.kind().to_owned(),
        requests,
        errors,
        secs,
        rps,
        p50_ms: ms(latencies.value_at_quantile(0.50)),
        p99_ms: ms(latencies.value_at_quantile(0.99)),
        max_ms: ms(latencies.max()),
        cpu_us_per_request: cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / (requests.max(1) as f64)),
    })
}

/// Microseconds from 1 to [`MAX_LATENCY_US`], three significant digits.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("creating a histogram")
}
