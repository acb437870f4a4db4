//! The outside services an instance may need, one private piece per run: a fresh PostgreSQL
//! database, a Redis key prefix; is the service there, and removing the piece again.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, ensure};

use crate::{config::mask_url, db::Db};

/// `Ok` when PostgreSQL at `url` connects and answers `SELECT 1`.
pub async fn ping_postgres(url: &str) -> anyhow::Result<()> {
    let db = Db::connect(url).await?;
    let ok = db.ping().await;
    db.close().await;
    ensure!(ok, "SELECT 1 failed");
    Ok(())
}

/// `Ok` when Redis at `url` connects and answers `PING`.
pub async fn ping_redis(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url).context("parsing the Redis URL")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting")?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .context("PING")?;
    ensure!(pong == "PONG", "PING answered {pong:?}");
    Ok(())
}

/// A database created on a PostgreSQL server for one run.
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates `statecart_<label>_<unique>` on the server of `admin_url` (which names any
    /// database there the user may connect to). `label` says who made it: `compare`, `test`.
    pub async fn create(admin_url: &str, label: &str) -> anyhow::Result<Self> {
        let name = format!("statecart_{}_{}", checked(label)?, unique_suffix());
        let admin = Db::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {}", mask_url(admin_url)))?;
        // `name` is lowercase letters, digits and underscores (see above), never input.
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

    /// The URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, ending every connection still open to it.
    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let admin = Db::connect(&self.admin_url).await?;
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&admin.pool)
            .await;
        admin.close().await;
        dropped?;
        Ok(())
    }
}

/// A Redis key prefix no other run uses, on one Redis server.
#[derive(Debug)]
pub struct RedisPrefix {
    url: String,
    prefix: String,
}

impl RedisPrefix {
    /// `statecart:<label>:<unique>:` on the Redis at `url` (not contacted here). `label` says
    /// who uses it: `compare`, `test`.
    pub fn new(url: &str, label: &str) -> anyhow::Result<Self> {
        Ok(Self {
            url: url.to_owned(),
            prefix: format!("statecart:{}:{}:", checked(label)?, unique_suffix()),
        })
    }

    /// The Redis URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix, for `redis_key_prefix`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes every key under the prefix, with `SCAN` (never `KEYS`, which blocks a shared
    /// Redis). Bounded: a run writes a few thousand keys; a leftover expires with its TTL.
    pub async fn delete_keys(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url.as_str()).context("parsing the Redis URL")?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cursor: u64 = 0;
        for _ in 0..10_000 {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
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
}

/// `label` when it is lowercase letters only: it goes into SQL and a `SCAN` pattern unquoted.
fn checked(label: &str) -> anyhow::Result<&str> {
    ensure!(
        !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase()),
        "a sandbox label is lowercase letters, not {label:?}"
    );
    Ok(label)
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
    fn redis_prefixes_are_unique() -> anyhow::Result<()> {
        let url = "redis://127.0.0.1:6379";
        assert_ne!(
            RedisPrefix::new(url, "test")?.prefix(),
            RedisPrefix::new(url, "test")?.prefix()
        );
        Ok(())
    }

    #[test]
    fn a_label_is_lowercase_letters() {
        assert!(checked("compare").is_ok());
        for bad in ["", "Test", "a*", "x y", "drop;"] {
            assert!(checked(bad).is_err(), "{bad:?}");
        }
    }
}
