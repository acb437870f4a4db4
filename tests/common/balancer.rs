//! A health-checking round-robin balancer on loopback, as an operator would put in front of
//! several instances: it asks each instance's `/healthz` every [`HEALTH_EVERY`], sends a new
//! connection to the next healthy instance, and skips one that refuses the connection. With
//! no healthy instance it waits (bounded) for one, as a client would see a slow answer.
//!
//! It balances TCP connections, not requests: a client connection is joined to one instance
//! for its life. So it never sends a request twice: it picks the next instance only when
//! connecting fails, before it has read a byte from the client; once bytes flow, a failure
//! reaches the client as a failure (as nginx does for a sent POST).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// How often every instance's `/healthz` is asked, as in the operator setup.
pub const HEALTH_EVERY: Duration = Duration::from_millis(100);
/// How long one health check may take before the instance counts as unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection waits for some instance to be healthy before it is closed.
const NO_UPSTREAM_WAIT: Duration = Duration::from_secs(10);

/// One instance behind the balancer.
#[derive(Debug, Clone, Copy)]
struct Upstream {
    address: SocketAddr,
    healthy: bool,
}

/// The balancer; its tasks end when it is dropped.
pub struct Balancer {
    port: u16,
    upstreams: Arc<Mutex<Vec<Upstream>>>,
    counts: Arc<Counts>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the balancer did besides joining a connection to the first instance it tried.
#[derive(Debug, Default)]
struct Counts {
    /// Connections sent past an instance that refused them.
    skipped: AtomicU64,
    /// Connections closed because no healthy instance took them.
    dropped: AtomicU64,
}

impl Balancer {
    /// Balances a fresh loopback port over `addresses`, each unhealthy until its first 200.
    pub async fn start(addresses: &[SocketAddr]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the balancer");
        let port = listener.local_addr().expect("address").port();
        let upstreams = Arc::new(Mutex::new(
            addresses
                .iter()
                .map(|&address| Upstream {
                    address,
                    healthy: false,
                })
                .collect::<Vec<_>>(),
        ));
        let counts = Arc::new(Counts::default());
        let tasks = vec![
            tokio::spawn(check_health(Arc::clone(&upstreams))),
            tokio::spawn(accept(
                listener,
                Arc::clone(&upstreams),
                Arc::clone(&counts),
            )),
        ];
        Self {
            port,
            upstreams,
            counts,
            tasks,
        }
    }

    /// `http://127.0.0.1:<port>`: where clients connect.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Instance `index` now listens at `address` (a restart): unhealthy until its first 200.
    pub fn replace(&self, index: usize, address: SocketAddr) {
        let mut upstreams = self
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        upstreams[index] = Upstream {
            address,
            healthy: false,
        };
    }

    /// Whether the last health check of instance `index` answered 200.
    pub fn is_healthy(&self, index: usize) -> bool {
        self.upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[index]
            .healthy
    }

    /// Waits (up to `bound`) until instance `index` is healthy; whether it became so.
    pub async fn wait_until_healthy(&self, index: usize, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if self.is_healthy(index) {
                return true;
            }
            tokio::time::sleep(HEALTH_EVERY / 2).await;
        }
        false
    }

    /// Connections sent on to another instance because one refused them.
    pub fn skipped(&self) -> u64 {
        self.counts.skipped.load(Ordering::Relaxed)
    }

    /// Connections closed unanswered because no healthy instance took them.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Every [`HEALTH_EVERY`], asks each instance's `/healthz` (on a new connection each time, as
/// a balancer's checker does) and records whether it answered 200.
async fn check_health(upstreams: Arc<Mutex<Vec<Upstream>>>) {
    let checker = reqwest::Client::builder()
        .timeout(HEALTH_TIMEOUT)
        .pool_max_idle_per_host(0)
        .build()
        .expect("a health-check client");
    let mut every = tokio::time::interval(HEALTH_EVERY);
    loop {
        every.tick().await;
        let addresses: Vec<SocketAddr> = snapshot(&upstreams).iter().map(|u| u.address).collect();
        let checks = addresses.iter().map(|address| {
            let checker = checker.clone();
            async move {
                let url = format!("http://{address}/healthz");
                checker
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|res| res.status() == reqwest::StatusCode::OK)
            }
        });
        let results = futures_util::future::join_all(checks).await;
        let mut upstreams = upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        for ((upstream, address), healthy) in upstreams.iter_mut().zip(&addresses).zip(results) {
            // An instance replaced while it was being asked keeps its own (unhealthy) state.
            if upstream.address == *address {
                upstream.healthy = healthy;
            }
        }
    }
}

/// Accepts client connections and joins each to an instance.
async fn accept(listener: TcpListener, upstreams: Arc<Mutex<Vec<Upstream>>>, counts: Arc<Counts>) {
    let next = Arc::new(AtomicUsize::new(0));
    while let Ok((mut inbound, _)) = listener.accept().await {
        let upstreams = Arc::clone(&upstreams);
        let counts = Arc::clone(&counts);
        let next = Arc::clone(&next);
        tokio::spawn(async move {
            let Some(mut outbound) = connect(&upstreams, &next, &counts).await else {
                // Nobody took it: the client sees its connection closed.
                counts.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

/// A connection to the next healthy instance in round-robin order, skipping those that
/// refuse; waits (up to [`NO_UPSTREAM_WAIT`]) while none is healthy.
async fn connect(
    upstreams: &Mutex<Vec<Upstream>>,
    next: &AtomicUsize,
    counts: &Counts,
) -> Option<TcpStream> {
    let deadline = Instant::now() + NO_UPSTREAM_WAIT;
    while Instant::now() < deadline {
        let all = snapshot(upstreams);
        let start = next.fetch_add(1, Ordering::Relaxed);
        let in_turn = (0..all.len())
            .map(|i| all[(start + i) % all.len()])
            .filter(|u| u.healthy);
        for upstream in in_turn {
            match TcpStream::connect(upstream.address).await {
                Ok(stream) => return Some(stream),
                Err(_) => {
                    counts.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(HEALTH_EVERY / 5).await;
    }
    None
}

fn snapshot(upstreams: &Mutex<Vec<Upstream>>) -> Vec<Upstream> {
    upstreams
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}
