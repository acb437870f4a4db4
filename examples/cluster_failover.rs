//! Measures what a Redis Cluster failover costs the redis store: a private local cluster (3
//! masters, a replica each), sessions written to without pause by concurrent writers through
//! the real `RedisStore` (load, change, compare-and-set save), and one master killed (SIGKILL)
//! in the middle. Redis replicates asynchronously, so a write the old master acknowledged but
//! had not yet passed on is gone after the replica takes over: this counts those, how long
//! requests failed, and whether any session vanished.
//!
//! ```sh
//! cargo run --release --example cluster_failover -- 30 3
//! cargo run --release --example cluster_failover -- 30 3 lagging
//! ```
//! Arguments: sessions (default 30), runs (default 3), and `lagging`: the master's replica is
//! frozen (SIGSTOP) for the last second before the kill, as a slow link would hold it back,
//! then thawed; what the master acknowledged in that second is what a failover can lose.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use statecart::{
    sandbox::{ClusterShape, RedisCluster},
    session::{Lifetimes, redis::RedisStore, state::State},
};

const TTL: Duration = Duration::from_secs(600);

/// What one writer saw: the last count Redis acknowledged, and when its requests failed
/// (seconds after the kill).
struct Writer {
    key: String,
    acknowledged: u64,
    failures: Vec<f64>,
}

fn state(n: u64) -> State {
    State::from([("n".to_owned(), n.to_string())])
}

async fn write_until(
    store: RedisStore,
    key: String,
    stop: Arc<AtomicBool>,
    killed_at: Arc<std::sync::OnceLock<Instant>>,
) -> Writer {
    let mut writer = Writer {
        key,
        acknowledged: 0,
        failures: Vec::new(),
    };
    while !stop.load(Ordering::Relaxed) {
        let saved = match store.load_versioned(&writer.key).await {
            Ok(Some((state, version))) => {
                let n: u64 = state.get("n").and_then(|n| n.parse().ok()).unwrap_or(0);
                store
                    .swap(&writer.key, version, &self::state(n + 1))
                    .await
                    .map(|saved| saved.map(|_| n + 1))
            }
            Ok(None) => Ok(None),
            Err(err) => Err(err),
        };
        match saved {
            Ok(Some(n)) => writer.acknowledged = n,
            // Another version came first: not possible with one writer per session.
            Ok(None) => {}
            Err(_) => {
                let since = killed_at.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
                writer.failures.push(since);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    writer
}

async fn run(sessions: usize, lagging: bool) -> anyhow::Result<()> {
    let mut cluster = RedisCluster::start(ClusterShape {
        masters: 3,
        replicas_per_master: 1,
        node_timeout: Duration::from_secs(2),
    })
    .await?;
    let lifetimes = Lifetimes {
        idle: TTL,
        guest: TTL,
    };
    let store = RedisStore::new(&cluster.url(), true, "measure:", lifetimes)?;
    let mut keys = Vec::new();
    for _ in 0..sessions {
        keys.push(store.save(&state(0), TTL).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at = Arc::new(std::sync::OnceLock::new());
    let tasks: Vec<_> = keys
        .iter()
        .map(|key| {
            tokio::spawn(write_until(
                store.clone(),
                key.clone(),
                Arc::clone(&stop),
                Arc::clone(&killed_at),
            ))
        })
        .collect();
    let victim = cluster.master_ports()[0];
    let replicas = cluster.replica_ports(victim);
    if lagging {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for &r in &replicas {
            cluster.freeze(r, true)?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    cluster.kill(victim)?;
    let _ = killed_at.set(Instant::now());
    for &r in &replicas {
        cluster.freeze(r, false)?;
    }
    // Long enough for the failover (node timeout 2 s) and some writes after it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writers = Vec::new();
    for task in tasks {
        writers.push(task.await?);
    }

    let (mut lost_writes, mut sessions_hit, mut sessions_gone, mut failed) = (0, 0, 0, 0);
    let (mut first, mut last) = (f64::MAX, 0.0_f64);
    for w in &writers {
        let now = store.load_versioned(&w.key).await?;
        let stored: u64 = now
            .as_ref()
            .and_then(|(s, _)| s.get("n")?.parse().ok())
            .unwrap_or(0);
        if now.is_none() {
            sessions_gone += 1;
        }
        if stored < w.acknowledged {
            lost_writes += w.acknowledged - stored;
            sessions_hit += 1;
        }
        failed += w.failures.len();
        for &t in &w.failures {
            first = first.min(t);
            last = last.max(t);
        }
    }
    let total: u64 = writers.iter().map(|w| w.acknowledged).sum();
    println!(
        "sessions {sessions}, acknowledged writes {total}, failed requests {failed} \
         (from {first:.2} s to {last:.2} s after the kill), acknowledged writes lost \
         {lost_writes} in {sessions_hit} sessions, sessions gone {sessions_gone}"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let sessions = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let runs = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let lagging = args.next().is_some_and(|a| a == "lagging");
    for _ in 0..runs {
        run(sessions, lagging).await?;
    }
    Ok(())
}
