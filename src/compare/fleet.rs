//! Experiment 10, the fleet: [`FLEET_SIZE`] instances of one backend behind the load generator,
//! which spreads scripted shoppers over them like a load balancer (round-robin, or sticky per
//! shopper), while one instance is killed and started again, or all restart one after another
//! (a rolling deploy). Per part: requests answered 5xx or never, shoppers logged out,
//! acknowledged adds lost, and how long until all was well again, with a timeline.
//!
//! The balancer behaves like a real one: it polls `/healthz` and skips an instance that is not
//! healthy, and it sends a request to the next instance only when the connection was refused
//! (nothing was sent yet); a request that was sent and never answered is counted, never resent.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use reqwest::StatusCode;
use serde::Deserialize;

use super::{
    report::{Fleet, FleetBucket, FleetPart, Routing},
    target::Sandbox,
    user::PASSWORD,
};
use crate::{
    config::SessionBackend,
    sandbox::{ClusterShape, Instance, RedisCluster, Signal},
};

/// Instances in the fleet.
pub const FLEET_SIZE: usize = 3;
/// Scripted shoppers at once.
pub const SHOPPERS: usize = 12;
/// How often the balancer asks every instance's `/healthz`.
const HEALTH_EVERY: Duration = Duration::from_millis(100);
/// How long a health check may take before the instance counts as down.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
/// A request that takes longer was never answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Shopping before the disruption starts, and after it ends.
const SETTLE: Duration = Duration::from_millis(1500);
/// How long a killed instance stays down before it is started again.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// Width of one timeline bucket.
const BUCKET: Duration = Duration::from_millis(250);
/// Cart units a shopper collects before clearing the cart (a line holds at most 99).
const CLEAR_AT: u32 = 20;
/// The settings every fleet instance runs with on top of the sandbox's: a drain a little
/// longer than the balancer needs to see it (several health checks), so a rolling restart
/// takes seconds, not the default 5 per instance.
const FLEET_SETTINGS: [(&str, &str); 1] = [("shutdown_drain_secs", "1")];

/// What the fleet goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption {
    /// One instance is killed (SIGKILL) and started again a second later.
    InstanceLost,
    /// Every instance in turn gets SIGTERM, ends, and is started again.
    RollingRestart,
    /// A master of the Redis Cluster the fleet shares is killed; its replica takes over.
    StoreFailover,
}

impl Disruption {
    /// The part's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::InstanceLost => "instance lost",
            Self::RollingRestart => "rolling restart",
            Self::StoreFailover => "store failover",
        }
    }
}

/// The cluster of the store-failover part: 3 masters with a replica each, and a node timeout
/// short enough for a failover within seconds.
const FAILOVER_CLUSTER: ClusterShape = ClusterShape {
    masters: 3,
    replicas_per_master: 1,
    node_timeout: Duration::from_secs(2),
};
/// How long the cluster may take to be whole again after its master was killed.
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);

/// One instance's place behind the balancer.
#[derive(Default)]
struct Slot {
    /// `http://127.0.0.1:port` while the instance runs.
    base: Option<String>,
    /// Whether its last health check answered 200.
    healthy: bool,
}

/// The balancer's view of the fleet.
struct Balancer {
    slots: Mutex<Vec<Slot>>,
    next: AtomicUsize,
    routing: Routing,
}

impl Balancer {
    /// The instances to try for `shopper`, best first: healthy ones in round-robin order (or
    /// the shopper's own first, when sticky), then the rest that run.
    fn candidates(&self, shopper: usize) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let start = match self.routing {
            Routing::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed),
            Routing::Sticky => shopper,
        };
        let order: Vec<&Slot> = (0..slots.len())
            .map(|i| &slots[(start + i) % slots.len()])
            .collect();
        let healthy = order.iter().filter(|s| s.healthy);
        let others = order.iter().filter(|s| !s.healthy);
        healthy
            .chain(others)
            .filter_map(|s| s.base.clone())
            .collect()
    }

    fn set(&self, index: usize, base: Option<String>) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots[index] = Slot {
            healthy: false,
            base,
        };
    }

    fn bases(&self) -> Vec<(usize, String)> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.base.clone()?)))
            .collect()
    }

    fn mark(&self, index: usize, base: &str, healthy: bool) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots[index].base.as_deref() == Some(base) {
            slots[index].healthy = healthy;
        }
    }
}

/// What happened to one request, as the timeline counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Ok,
    ServerError,
    Unanswered,
    LoggedOut,
    Lost(u32),
}

/// Everything the shoppers saw, with times from the start of the part.
struct Log {
    started: Instant,
    events: Mutex<Vec<(Duration, Event)>>,
}

impl Log {
    fn record(&self, event: Event) {
        let at = self.started.elapsed();
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((at, event));
    }
}

/// How a request went.
enum Answer {
    /// The status and body.
    Answered(StatusCode, String),
    /// Sent and never answered, or no instance would take it.
    Unanswered,
}

/// A shopper: a browser (one cookie jar for every instance on 127.0.0.1) and its account.
struct Shopper {
    index: usize,
    client: reqwest::Client,
    username: String,
    /// Units of the shopper's product the server acknowledged and the cart should hold.
    acknowledged: u32,
    logged_out: bool,
    /// The last clear was sent and got no answer (or a 5xx): it may have been done.
    clear_unanswered: bool,
}

#[derive(Deserialize)]
struct SessionJson {
    user: Option<String>,
    cart: Vec<Line>,
}

#[derive(Deserialize)]
struct Line {
    product_id: i64,
    quantity: u32,
}

impl Shopper {
    async fn send(&self, balancer: &Balancer, post: Option<&[(&str, &str)]>, path: &str) -> Answer {
        for base in balancer.candidates(self.index) {
            let url = format!("{base}{path}");
            let request = match post {
                Some(form) => self.client.post(&url).form(form),
                None => self.client.get(&url),
            };
            match request.send().await {
                Ok(res) => {
                    let status = res.status();
                    return match res.text().await {
                        Ok(body) => Answer::Answered(status, body),
                        Err(_) => Answer::Unanswered,
                    };
                }
                // Refused before anything was sent: a balancer may try the next instance.
                Err(err) if err.is_connect() => {}
                Err(_) => return Answer::Unanswered,
            }
        }
        Answer::Unanswered
    }

    /// Sends and records the outcome; `Some` only for an answer below 500.
    async fn step(
        &self,
        balancer: &Balancer,
        log: &Log,
        post: Option<&[(&str, &str)]>,
        path: &str,
    ) -> Option<(StatusCode, String)> {
        match self.send(balancer, post, path).await {
            Answer::Answered(status, _) if status.is_server_error() => {
                log.record(Event::ServerError);
                None
            }
            Answer::Answered(status, body) => {
                log.record(Event::Ok);
                Some((status, body))
            }
            Answer::Unanswered => {
                log.record(Event::Unanswered);
                None
            }
        }
    }

    async fn log_in(&mut self, balancer: &Balancer, log: &Log, product: i64) {
        let form = [("username", self.username.as_str()), ("password", PASSWORD)];
        if let Some((StatusCode::SEE_OTHER, _)) =
            self.step(balancer, log, Some(&form), "/login").await
        {
            // A guest cart of this browser may have come along: that is the new baseline.
            if let Some(view) = self.view(balancer, log).await {
                self.acknowledged = units(&view, product);
            }
        }
    }

    async fn view(&self, balancer: &Balancer, log: &Log) -> Option<SessionJson> {
        let (status, body) = self.step(balancer, log, None, "/session.json").await?;
        if status != StatusCode::OK {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// One round: add a unit, look at the session, clear the cart now and then.
    async fn shop(&mut self, balancer: &Balancer, log: &Log, product: i64) {
        let id = product.to_string();
        let add = [("product_id", id.as_str()), ("quantity", "1")];
        if let Some((StatusCode::SEE_OTHER, _)) =
            self.step(balancer, log, Some(&add), "/cart/add").await
        {
            self.acknowledged += 1;
        }
        let Some(view) = self.view(balancer, log).await else {
            return;
        };
        if view.user.as_deref() != Some(self.username.as_str()) {
            log.record(Event::LoggedOut);
            self.logged_out = true;
            if self.acknowledged > 0 {
                log.record(Event::Lost(self.acknowledged));
            }
            self.acknowledged = 0;
            self.log_in(balancer, log, product).await;
            return;
        }
        let held = units(&view, product);
        // After a clear that got no answer, the cart may or may not be empty: that is no loss.
        if held < self.acknowledged && !std::mem::take(&mut self.clear_unanswered) {
            log.record(Event::Lost(self.acknowledged - held));
        }
        self.acknowledged = held;
        if held >= CLEAR_AT {
            match self.step(balancer, log, Some(&[]), "/cart/clear").await {
                Some((StatusCode::SEE_OTHER, _)) => self.acknowledged = 0,
                Some(_) => {}
                None => self.clear_unanswered = true,
            }
        }
    }
}

fn units(view: &SessionJson, product: i64) -> u32 {
    view.cart
        .iter()
        .filter(|l| l.product_id == product)
        .map(|l| l.quantity)
        .sum()
}

/// Starts instance `index` of the fleet in `sandbox`, on `cluster` when given.
async fn start(
    binary: &std::path::Path,
    sandbox: &Sandbox,
    index: usize,
    cluster: Option<&RedisCluster>,
) -> anyhow::Result<Instance> {
    let mut settings: Vec<(&'static str, String)> = FLEET_SETTINGS
        .iter()
        .map(|&(k, v)| (k, v.to_owned()))
        .collect();
    if let Some(cluster) = cluster {
        settings.push(("redis_url", cluster.url()));
        settings.push(("redis_cluster", "true".to_owned()));
    }
    sandbox
        .start(binary, &format!("fleet-{index}"), &settings)
        .await
}

/// 10: every part of the fleet experiment on `backend`: an instance lost and a rolling restart
/// behind a round-robin balancer, and on memory also behind a sticky one.
pub async fn experiment(
    binary: &std::path::Path,
    sandbox: &Sandbox,
    backend: SessionBackend,
) -> anyhow::Result<Fleet> {
    super::experiments::prepare_catalog(&sandbox.database_url, SHOPPERS, Some(1_000_000)).await?;
    let mut routings = vec![Routing::RoundRobin];
    if backend == SessionBackend::Memory {
        routings.push(Routing::Sticky);
    }
    let mut parts = Vec::new();
    for routing in routings {
        for disruption in [Disruption::InstanceLost, Disruption::RollingRestart] {
            let tag = parts.len();
            parts.push(part(binary, sandbox, routing, disruption, tag, None).await?);
        }
    }
    let mut notes = Vec::new();
    if backend == SessionBackend::Redis {
        // The same fleet on a Redis Cluster of its own (`redis_cluster`), a master killed.
        match RedisCluster::start(FAILOVER_CLUSTER).await {
            Ok(mut cluster) => {
                let tag = parts.len();
                parts.push(
                    part(
                        binary,
                        sandbox,
                        Routing::RoundRobin,
                        Disruption::StoreFailover,
                        tag,
                        Some(&mut cluster),
                    )
                    .await?,
                );
            }
            Err(err) => notes.push(format!(
                "store failover not run: no local Redis Cluster could be started ({err:#})"
            )),
        }
    }
    Ok(Fleet { parts, notes })
}

/// One part of the fleet experiment: [`SHOPPERS`] shoppers on [`FLEET_SIZE`] instances behind
/// a balancer with `routing`, through `disruption`.
async fn part(
    binary: &std::path::Path,
    sandbox: &Sandbox,
    routing: Routing,
    disruption: Disruption,
    tag: usize,
    cluster: Option<&mut RedisCluster>,
) -> anyhow::Result<FleetPart> {
    let mut instances = Vec::with_capacity(FLEET_SIZE);
    for index in 0..FLEET_SIZE {
        instances.push(Some(
            start(binary, sandbox, index, cluster.as_deref()).await?,
        ));
    }
    let balancer = Arc::new(Balancer {
        slots: Mutex::new(
            instances
                .iter()
                .map(|i| Slot {
                    base: i.as_ref().map(|i| i.base().to_owned()),
                    healthy: true,
                })
                .collect(),
        ),
        next: AtomicUsize::new(0),
        routing,
    });
    let products = super::user::Browser::new()?
        .products(instances[0].as_ref().context("instance 0 runs")?)
        .await?;
    let ids: Vec<i64> = products.iter().map(|p| p.id).collect();
    anyhow::ensure!(!ids.is_empty(), "the fleet's catalog is empty");

    let stop = Arc::new(AtomicBool::new(false));
    let health = tokio::spawn(check_health(Arc::clone(&balancer), Arc::clone(&stop)));
    let log = Arc::new(Log {
        started: Instant::now(),
        events: Mutex::new(Vec::new()),
    });

    let mut shoppers = Vec::with_capacity(SHOPPERS);
    for index in 0..SHOPPERS {
        let client = super::user::base_client()
            .cookie_store(true)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building a shopper's client")?;
        let mut shopper = Shopper {
            index,
            client,
            username: format!("fleet{tag}x{index}"),
            acknowledged: 0,
            logged_out: false,
            clear_unanswered: false,
        };
        let form = [
            ("username", shopper.username.as_str()),
            ("password", PASSWORD),
        ];
        match shopper.send(&balancer, Some(&form), "/register").await {
            Answer::Answered(StatusCode::SEE_OTHER, _) => {}
            Answer::Answered(status, _) => anyhow::bail!("registering a shopper answered {status}"),
            Answer::Unanswered => anyhow::bail!("registering a shopper got no answer"),
        }
        shopper.logged_out = false;
        shoppers.push(shopper);
    }
    let shopping: Vec<_> = shoppers
        .into_iter()
        .map(|mut shopper| {
            let (balancer, log, stop) =
                (Arc::clone(&balancer), Arc::clone(&log), Arc::clone(&stop));
            let product = ids[shopper.index % ids.len()];
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    shopper.shop(&balancer, &log, product).await;
                }
                shopper
            })
        })
        .collect();

    tokio::time::sleep(SETTLE).await;
    let disrupted_at = log.started.elapsed();
    let disrupted = match cluster {
        Some(cluster) => fail_over(cluster).await,
        None => disrupt(binary, sandbox, &balancer, &mut instances, disruption).await,
    };
    let disruption_secs = (log.started.elapsed() - disrupted_at).as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    stop.store(true, Ordering::Relaxed);
    let mut finished = Vec::with_capacity(SHOPPERS);
    for task in shopping {
        finished.push(task.await.context("a shopper panicked")?);
    }
    stop.store(true, Ordering::Relaxed);
    health.abort();
    for instance in instances.into_iter().flatten() {
        instance.stop(Signal::Term).await?;
    }
    disrupted?;

    let events = std::mem::take(&mut *log.events.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(summarise(
        routing,
        disruption,
        &events,
        &finished,
        disrupted_at,
        disruption_secs,
    ))
}

/// Kills the first master of `cluster` and waits (bounded) until its replica took over.
async fn fail_over(cluster: &mut RedisCluster) -> anyhow::Result<()> {
    let master = *cluster
        .master_ports()
        .first()
        .context("the cluster has a master")?;
    cluster.kill(master)?;
    cluster.wait_ok(FAILOVER_WITHIN).await
}

/// Carries out `disruption` on the running fleet.
async fn disrupt(
    binary: &std::path::Path,
    sandbox: &Sandbox,
    balancer: &Balancer,
    instances: &mut [Option<Instance>],
    disruption: Disruption,
) -> anyhow::Result<()> {
    let victims: Vec<usize> = match disruption {
        Disruption::InstanceLost => vec![1],
        Disruption::RollingRestart => (0..FLEET_SIZE).collect(),
        Disruption::StoreFailover => Vec::new(),
    };
    for index in victims {
        let instance = instances[index].take().context("the instance runs")?;
        match disruption {
            Disruption::InstanceLost => {
                instance.stop(Signal::Kill).await?;
                balancer.set(index, None);
                tokio::time::sleep(DOWN_FOR).await;
            }
            Disruption::RollingRestart | Disruption::StoreFailover => {
                // The balancer keeps it until its health check says it drains or it is gone.
                instance.stop(Signal::Term).await?;
                balancer.set(index, None);
            }
        }
        let again = start(binary, sandbox, index, None).await?;
        balancer.set(index, Some(again.base().to_owned()));
        instances[index] = Some(again);
        // Like a deploy tool, wait until the balancer sees it healthy before the next one.
        wait_healthy(balancer, index).await;
    }
    Ok(())
}

/// Waits (bounded) until the balancer's health check passed for instance `index`.
async fn wait_healthy(balancer: &Balancer, index: usize) {
    for _ in 0..50 {
        let healthy = balancer
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .is_some_and(|s| s.healthy);
        if healthy {
            return;
        }
        tokio::time::sleep(HEALTH_EVERY).await;
    }
}

/// The balancer's health checks, every [`HEALTH_EVERY`], until `stop`.
async fn check_health(balancer: Arc<Balancer>, stop: Arc<AtomicBool>) {
    let Ok(client) = super::user::base_client().timeout(HEALTH_TIMEOUT).build() else {
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        for (index, base) in balancer.bases() {
            let healthy = client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            balancer.mark(index, &base, healthy);
        }
        tokio::time::sleep(HEALTH_EVERY).await;
    }
}

/// The part's figures from what the shoppers saw.
fn summarise(
    routing: Routing,
    disruption: Disruption,
    events: &[(Duration, Event)],
    shoppers: &[Shopper],
    disrupted_at: Duration,
    disruption_secs: f64,
) -> FleetPart {
    let count = |want: fn(&Event) -> bool| events.iter().filter(|(_, e)| want(e)).count() as u64;
    let last_failure = events
        .iter()
        .filter(|(_, e)| *e != Event::Ok)
        .map(|(at, _)| *at)
        .max();
    let recovered_after_secs =
        last_failure.map_or(0.0, |at| at.saturating_sub(disrupted_at).as_secs_f64());
    let end = events.iter().map(|(at, _)| *at).max().unwrap_or_default();
    let buckets = usize::try_from(end.as_millis() / BUCKET.as_millis()).unwrap_or(0) + 1;
    let mut timeline: Vec<FleetBucket> = (0..buckets)
        .map(|i| FleetBucket {
            at_secs: (BUCKET * u32::try_from(i).unwrap_or(u32::MAX)).as_secs_f64(),
            ok: 0,
            failed: 0,
        })
        .collect();
    for (at, event) in events {
        let i = usize::try_from(at.as_millis() / BUCKET.as_millis()).unwrap_or(0);
        if let Some(bucket) = timeline.get_mut(i) {
            match event {
                Event::Ok => bucket.ok += 1,
                _ => bucket.failed += 1,
            }
        }
    }
    FleetPart {
        part: disruption.name().to_owned(),
        routing,
        instances: FLEET_SIZE,
        shoppers: shoppers.len(),
        requests: count(|e| matches!(e, Event::Ok | Event::ServerError | Event::Unanswered)),
        server_errors: count(|e| *e == Event::ServerError),
        unanswered: count(|e| *e == Event::Unanswered),
        logouts: count(|e| *e == Event::LoggedOut),
        shoppers_logged_out: shoppers.iter().filter(|s| s.logged_out).count(),
        adds_lost: events
            .iter()
            .map(|(_, e)| match e {
                Event::Lost(n) => u64::from(*n),
                _ => 0,
            })
            .sum(),
        disrupted_at_secs: disrupted_at.as_secs_f64(),
        disruption_secs,
        recovered_after_secs,
        timeline,
    }
}
