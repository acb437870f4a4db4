//! The services some backends need (PostgreSQL, Redis): is it there, a fresh database or key
//! prefix per sandbox, and removing them again.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    config::{SessionBackend, mask_url},
    db::Db,
};

/// How long a service may take to answer the reachability check.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// What one backend runs on in this comparison.
#[derive(Debug, Clone)]
pub struct Target {
    /// The session backend.
    pub backend: SessionBackend,
    /// A PostgreSQL server to create a database per sandbox in; `None` means SQLite files.
    pub postgres_url: Option<String>,
    /// The Redis server, for the redis backend.
    pub redis_url: Option<String>,
    /// The cookie backend with `cookie_revocation` on (its own row, `cookie+revocation`).
    pub cookie_revocation: bool,
}

impl Target {
    /// The test suite's name for this setup (`sqlite` or `postgres` for the database backend).
    pub fn variant(&self) -> &'static str {
        match (self.backend, &self.postgres_url) {
            (SessionBackend::Database, Some(_)) => "postgres",
            (SessionBackend::Database, None) => "sqlite",
            (SessionBackend::Cookie, _) if self.cookie_revocation => "cookie+revocation",
            (other, _) => other.as_str(),
        }
    }

    /// Where this target keeps session state, in words for the report.
    pub fn store(&self) -> String {
        match self.backend {
            SessionBackend::Cookie if self.cookie_revocation => {
                "encrypted cookie, revoked ids and user epochs in SQLite".to_owned()
            }
            SessionBackend::Cookie => "encrypted cookie (app data: SQLite)".to_owned(),
            SessionBackend::Memory => "process memory (app data: SQLite)".to_owned(),
            SessionBackend::Database => match &self.postgres_url {
                Some(url) => format!("PostgreSQL at {}", mask_url(url)),
                None => "SQLite file".to_owned(),
            },
            SessionBackend::Redis => format!(
                "Redis at {} (app data: SQLite)",
                mask_url(self.redis_url.as_deref().unwrap_or_default())
            ),
        }
    }

    /// `Err(reason)` when the service this target needs does not answer.
    pub async fn check_reachable(&self) -> Result<(), String> {
        if let Some(url) = &self.postgres_url {
            let answer = tokio::time::timeout(PING_TIMEOUT, async {
                let db = Db::connect(url).await?;
                let ok = db.ping().await;
                db.close().await;
                anyhow::ensure!(ok, "SELECT 1 failed");
                Ok(())
            })
            .await;
            match answer {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    return Err(format!(
                        "PostgreSQL at {} is not reachable: {err:#}",
                        mask_url(url)
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "PostgreSQL at {} did not answer within {} s",
                        mask_url(url),
                        PING_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        if let Some(url) = &self.redis_url {
            match tokio::time::timeout(PING_TIMEOUT, redis_ping(url)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    return Err(format!(
                        "Redis at {} is not reachable: {err:#}",
                        mask_url(url)
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "Redis at {} did not answer PING within {} s",
                        mask_url(url),
                        PING_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        Ok(())
    }
}

async fn redis_ping(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url).context("parsing the Redis URL")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting")?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .context("PING")?;
    anyhow::ensure!(pong == "PONG", "PING answered {pong:?}");
    Ok(())
}

/// `<pid>_<n>_<nanos>`: unique per process, call and moment.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{}_{n}_{nanos}", std::process::id())
}

/// A Redis key prefix no other run uses.
pub fn unique_redis_prefix() -> String {
    format!("statecart:compare:{}:", unique_suffix())
}

/// Deletes every key under `prefix` (best effort: a leftover key expires with its TTL anyway).
pub async fn delete_redis_keys(url: &str, prefix: &str) {
    let result: anyhow::Result<()> = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor: u64 = 0;
        // SCAN, not KEYS: never block a shared Redis. Bounded: a run writes a few thousand keys.
        for _ in 0..10_000 {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(())
    }
    .await;
    if let Err(err) = result {
        eprintln!("compare: could not delete the Redis keys under {prefix}: {err:#}");
    }
}

/// A database created on a PostgreSQL server for one sandbox.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl PgDatabase {
    /// Creates a fresh database next to the one `admin_url` names.
    pub async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!("statecart_compare_{}", unique_suffix());
        let admin = Db::connect(admin_url).await?;
        // `name` is made of digits, letters and underscores above, never input.
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin.pool)
            .await
            .with_context(|| format!("creating database {name} on {}", mask_url(admin_url)));
        admin.close().await;
        created?;
        Ok(Self {
            url: sibling_database_url(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    /// Drops the database, ending any connection left to it (best effort).
    pub async fn drop_database(self) {
        let result: anyhow::Result<()> = async {
            let admin = Db::connect(&self.admin_url).await?;
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let dropped = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&admin.pool)
                .await;
            admin.close().await;
            dropped?;
            Ok(())
        }
        .await;
        if let Err(err) = result {
            eprintln!("compare: could not drop database {}: {err:#}", self.name);
        }
    }
}

/// `postgres://u@h/other?x` -> `postgres://u@h/<name>?x`.
fn sibling_database_url(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let server = match base.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((host, _)) => format!("{scheme}://{host}"),
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    format!("{server}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sibling_database_keeps_server_and_options() {
        assert_eq!(
            sibling_database_url("postgres://app:pw@db:5432/shop?sslmode=disable", "x"),
            "postgres://app:pw@db:5432/x?sslmode=disable"
        );
        assert_eq!(
            sibling_database_url("postgres://db", "x"),
            "postgres://db/x"
        );
    }

    #[test]
    fn redis_prefixes_are_unique() {
        assert_ne!(unique_redis_prefix(), unique_redis_prefix());
    }
}
