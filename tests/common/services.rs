//! The external services some variants need: a fresh PostgreSQL database or a private Redis
//! key prefix per test (from `statecart::sandbox`), removed again when the test is done; and
//! whether a variant whose service is not configured is skipped or, on CI, a failure.

use std::{
    io::Write as _,
    sync::{Mutex, OnceLock},
};

use statecart::sandbox::{self, ClusterShape, PgDatabase, RedisCluster, RedisPrefix};
use tokio::sync::OnceCell;

/// Names the PostgreSQL server for the `postgres` variants (e.g. postgres://postgres@127.0.0.1/postgres).
pub const POSTGRES_ENV: &str = "STATECART_TEST_POSTGRES_URL";
/// Names the Redis server for the `redis` variants (e.g. redis://127.0.0.1:6379).
pub const REDIS_ENV: &str = "STATECART_TEST_REDIS_URL";

/// Names this suite's databases (`statecart_test_*`) and Redis prefixes (`statecart:test:*`).
const LABEL: &str = "test";

/// Whether this is CI, where a missing service is a failure rather than a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The URL in `var`; without it, `None` (said once per test binary), or a failure on CI.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                !in_ci(),
                "{var} must be set when CI=true: the suite must not skip it"
            );
            say_skipped_once(&format!("{var} is not set"));
            None
        }
    }
}

fn say_skipped_once(why: &str) {
    static SAID: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let mut said = SAID
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !said.iter().any(|s| s == why) {
        said.push(why.to_owned());
        // Written past the test harness's capture, so a normal `cargo test` shows it.
        let _ = writeln!(
            std::io::stderr(),
            "note: {why}, so the variants that need it were skipped in {}",
            std::env::args().next().unwrap_or_default()
        );
    }
}

/// A service resource owned by one test; removed on drop.
pub enum Service {
    /// A database created for this test.
    Postgres(PgDatabase),
    /// A key prefix used only by this test.
    Redis(RedisPrefix),
}

/// Creates a database for one test and returns its URL.
pub async fn create_postgres_database(admin_url: &str) -> (String, Service) {
    let db = PgDatabase::create(admin_url, LABEL)
        .await
        .unwrap_or_else(|e| panic!("a test database on PostgreSQL at {POSTGRES_ENV}: {e:#}"));
    (db.url().to_owned(), Service::Postgres(db))
}

/// A key prefix for one test, after checking that Redis answers.
pub async fn redis_prefix(url: &str) -> (String, Service) {
    sandbox::ping_redis(url)
        .await
        .unwrap_or_else(|e| panic!("Redis at {REDIS_ENV} is not reachable: {e:#}"));
    let prefix = RedisPrefix::new(url, LABEL).expect("a key prefix");
    (prefix.prefix().to_owned(), Service::Redis(prefix))
}

impl Drop for Service {
    fn drop(&mut self) {
        // Best effort, and done before the test goes on.
        let _ = block_on(|| async {
            match &*self {
                Self::Postgres(db) => db.drop_database().await,
                Self::Redis(prefix) => prefix.delete_keys().await,
            }
        });
    }
}

/// Runs an async harness call to its end from code that cannot await (`Drop`, or a test step
/// inside the test's runtime), on a thread and runtime of its own. `None` when that runtime
/// could not be built or the call panicked.
pub fn block_on<F: Future>(call: impl FnOnce() -> F + Send) -> Option<F::Output>
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                Some(runtime.block_on(call()))
            })
            .join()
            .ok()
            .flatten()
    })
}

/// Whether `redis-server` is here to build a cluster from; without it the `redis_cluster`
/// variants are skipped (said once), or fail the run on CI.
pub fn cluster_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if !found {
        assert!(
            !in_ci(),
            "redis-server must be installed when CI=true: the redis_cluster variants must not skip"
        );
        say_skipped_once("redis-server is not installed");
    }
    found
}

/// The cluster every `redis_cluster` variant shares: 3 masters with a replica each, started
/// by the first test that needs it. A static is never dropped: the cluster's watchdog kills
/// its nodes and removes its folder when this test binary ends.
pub async fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceCell<RedisCluster> = OnceCell::const_new();
    CLUSTER
        .get_or_init(|| async {
            RedisCluster::start(ClusterShape {
                masters: 3,
                replicas_per_master: 1,
                // Generous: on a busy machine a slow node must not be failed over mid-test.
                node_timeout: std::time::Duration::from_secs(5),
            })
            .await
            .unwrap_or_else(|e| panic!("a local Redis Cluster: {e:#}"))
        })
        .await
}

/// A key prefix of its own for one test on a cluster.
pub fn cluster_prefix(url: &str) -> String {
    RedisPrefix::new(url, LABEL)
        .expect("a key prefix")
        .prefix()
        .to_owned()
}

/// The keys matching `pattern` on the one node at `url` (a test's few keys: `KEYS` is fine).
pub async fn keys_on(url: &str, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS")
}
