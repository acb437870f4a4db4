//! The external services some variants need: a fresh PostgreSQL database or a private Redis
//! key prefix per test, removed again when the test is done.

use std::{
    io::Write as _,
    sync::{Mutex, OnceLock},
};

use statecart::db::Db;

/// Names the PostgreSQL server for the `postgres` variants (e.g. postgres://postgres@127.0.0.1/postgres).
pub const POSTGRES_ENV: &str = "STATECART_TEST_POSTGRES_URL";
/// Names the Redis server for the `redis` variants (e.g. redis://127.0.0.1:6379).
pub const REDIS_ENV: &str = "STATECART_TEST_REDIS_URL";

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
            say_skipped_once(var);
            None
        }
    }
}

fn say_skipped_once(var: &str) {
    static SAID: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let mut said = SAID
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !said.iter().any(|s| s == var) {
        said.push(var.to_owned());
        // Written past the test harness's capture, so a normal `cargo test` shows it.
        let _ = writeln!(
            std::io::stderr(),
            "note: {var} is not set, so the variants that need it were skipped in {}",
            std::env::args().next().unwrap_or_default()
        );
    }
}

fn unique_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}_{n}_{nanos}", std::process::id())
}

/// A service resource owned by one test; removed on drop.
pub enum Service {
    /// A database created for this test.
    Postgres { admin_url: String, name: String },
    /// A key prefix used only by this test.
    Redis { url: String, prefix: String },
}

/// Creates a database for one test and returns its URL.
pub async fn create_postgres_database(admin_url: &str) -> (String, Service) {
    let name = format!("statecart_test_{}", unique_suffix());
    let admin = Db::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {POSTGRES_ENV} is not reachable: {e:#}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin.pool)
        .await
        .expect("create the test database");
    admin.close().await;
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    let url = format!("{server}/{name}{query}");
    (
        url,
        Service::Postgres {
            admin_url: admin_url.to_owned(),
            name,
        },
    )
}

/// A key prefix for one test, after checking that Redis answers.
pub async fn redis_prefix(url: &str) -> (String, Service) {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {REDIS_ENV} is not reachable: {e}"));
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("redis answers PING");
    let prefix = format!("statecart:test:{}:", unique_suffix());
    (
        prefix.clone(),
        Service::Redis {
            url: url.to_owned(),
            prefix,
        },
    )
}

impl Drop for Service {
    fn drop(&mut self) {
        // Async clean-up on a thread of its own: drop cannot await.
        let job = match self {
            Self::Postgres { admin_url, name } => Job::Postgres(admin_url.clone(), name.clone()),
            Self::Redis { url, prefix } => Job::Redis(url.clone(), prefix.clone()),
        };
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(job.run());
        })
        .join();
    }
}

enum Job {
    Postgres(String, String),
    Redis(String, String),
}

impl Job {
    async fn run(self) {
        match self {
            Self::Postgres(admin_url, name) => {
                if let Ok(admin) = Db::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&admin.pool)
                        .await;
                    admin.close().await;
                }
            }
            Self::Redis(url, prefix) => {
                let Ok(client) = redis::Client::open(url.as_str()) else {
                    return;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<i64, _> =
                        redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                }
            }
        }
    }
}
