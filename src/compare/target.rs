//! What one backend runs on (its [`Target`]), and the [`Sandbox`] of one experiment on it: a
//! fresh data dir, plus a fresh PostgreSQL database or a private Redis key prefix, removed
//! afterwards. The instances, databases and prefixes come from [`crate::sandbox`].

use std::{path::Path, time::Duration};

use anyhow::Context as _;

use crate::{
    config::{SessionBackend, mask_url},
    sandbox::{self, Instance, PgDatabase, RedisPrefix},
};

/// How long a service may take to answer the reachability check.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Names the databases and Redis prefixes of a comparison run.
const LABEL: &str = "compare";

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
            answers("PostgreSQL", url, "answer", sandbox::ping_postgres(url)).await?;
        }
        if let Some(url) = &self.redis_url {
            answers("Redis", url, "answer PING", sandbox::ping_redis(url)).await?;
        }
        Ok(())
    }
}

/// `Err(reason)` when `ping`, the check of `service` at `url`, fails or takes longer than
/// [`PING_TIMEOUT`]; `asked` is what it did not do in time.
async fn answers(
    service: &str,
    url: &str,
    asked: &str,
    ping: impl Future<Output = anyhow::Result<()>>,
) -> Result<(), String> {
    match tokio::time::timeout(PING_TIMEOUT, ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!(
            "{service} at {} is not reachable: {err:#}",
            mask_url(url)
        )),
        Err(_) => Err(format!(
            "{service} at {} did not {asked} within {} s",
            mask_url(url),
            PING_TIMEOUT.as_secs()
        )),
    }
}

/// One experiment's private world: every instance started in it shares the data dir (so the
/// SQLite file and the generated session key) and the database or Redis prefix.
pub struct Sandbox {
    dir: tempfile::TempDir,
    /// The app database of every instance in this sandbox.
    pub database_url: String,
    backend: SessionBackend,
    cookie_revocation: bool,
    postgres: Option<PgDatabase>,
    redis: Option<RedisPrefix>,
}

impl Sandbox {
    /// A fresh sandbox for `target`: a temp dir, on PostgreSQL a new database, on Redis a new
    /// key prefix.
    pub async fn create(target: &Target) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("statecart-compare-")
            .tempdir()
            .context("creating a temporary data dir")?;
        let postgres = match &target.postgres_url {
            Some(admin_url) => Some(PgDatabase::create(admin_url, LABEL).await?),
            None => None,
        };
        let database_url = match &postgres {
            Some(db) => db.url().to_owned(),
            None => format!("sqlite://{}/statecart.db", dir.path().display()),
        };
        let redis = match &target.redis_url {
            Some(url) => Some(RedisPrefix::new(url, LABEL)?),
            None => None,
        };
        Ok(Self {
            dir,
            database_url,
            backend: target.backend,
            cookie_revocation: target.cookie_revocation,
            postgres,
            redis,
        })
    }

    /// Starts `binary serve` in this sandbox as instance `name`, with `extra` settings on top,
    /// and waits until it listens.
    pub async fn start(
        &self,
        binary: &Path,
        name: &str,
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<Instance> {
        let mut settings = vec![
            ("instance", name.to_owned()),
            ("data_dir", self.dir.path().display().to_string()),
            ("database_url", self.database_url.clone()),
            ("session_backend", self.backend.as_str().to_owned()),
            ("cookie_revocation", self.cookie_revocation.to_string()),
        ];
        if let Some(redis) = &self.redis {
            settings.push(("redis_url", redis.url().to_owned()));
            settings.push(("redis_key_prefix", redis.prefix().to_owned()));
        }
        settings.extend_from_slice(extra);
        Instance::start(binary, &settings).await
    }

    /// Removes what lives outside the temp dir (database, Redis keys; best effort: a leftover
    /// key expires with its TTL anyway); the dir goes on drop.
    pub async fn cleanup(self) {
        if let Some(db) = &self.postgres
            && let Err(err) = db.drop_database().await
        {
            eprintln!("compare: could not drop database {}: {err:#}", db.name());
        }
        if let Some(redis) = &self.redis
            && let Err(err) = redis.delete_keys().await
        {
            eprintln!(
                "compare: could not delete the Redis keys under {}: {err:#}",
                redis.prefix()
            );
        }
    }
}
