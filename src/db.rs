//! The app database: one pool for `sqlite://` or `postgres://`, with embedded migrations per dialect.

use std::{path::Path, str::FromStr, time::Duration};

use anyhow::Context as _;
use sqlx::{
    AnyPool,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
};

use crate::config::DatabaseUrl;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Which SQL dialect the pool speaks.
pub use crate::config::Dialect;

/// A connection pool plus the dialect behind it; cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    /// The pool; queries use `$1` placeholders, which both dialects accept.
    pub pool: AnyPool,
    /// The dialect, for the few statements that differ.
    pub dialect: Dialect,
}

impl Db {
    /// Connects to `url` (`sqlite:` or `postgres://`); see [`Db::open`].
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let url = DatabaseUrl::parse(url).map_err(|m| anyhow::anyhow!("database URL {m}"))?;
        Self::open(&url).await
    }

    /// Connects to `url`, creating a SQLite file (and its folder) when missing.
    pub async fn open(url: &DatabaseUrl) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = url.dialect();
        let url = match dialect {
            Dialect::Sqlite => prepare_sqlite_url(url.as_str())?,
            Dialect::Postgres => url.as_str().to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url).context("parsing database_url")?;
        let pool = AnyPoolOptions::new()
            // SQLite has a single writer; a few connections serve readers while it works.
            .max_connections(if dialect == Dialect::Sqlite { 8 } else { 16 })
            // With WAL, `synchronous = NORMAL` commits without waiting for the disk: a process
            // crash (SIGKILL) still loses no committed write, since the WAL is in the OS's
            // hands; a power loss or OS crash can lose the last commits before a checkpoint.
            // FULL (SQLite's default) pays an fsync per commit, which made every session
            // write cost milliseconds.
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            // Never hang a request on a database that is gone: fail fast and answer 503.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to {}", crate::config::mask_url(&url)))?;
        if dialect == Dialect::Sqlite {
            // WAL lets readers go on while a writer commits; the mode is kept in the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .context("enabling WAL")?;
        }
        Ok(Self { pool, dialect })
    }

    /// Applies the embedded migrations of this dialect.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await.context("running migrations")
    }

    /// A transaction that writes: on SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`) so concurrent writers queue on the busy timeout instead of failing to
    /// upgrade a read lock; on PostgreSQL a plain `BEGIN` (row locks do the queueing).
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Makes sure the folder exists and asks SQLite to create the file when missing.
fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    let path = rest.split('?').next().unwrap_or_default();
    if !path.is_empty()
        && path != ":memory:"
        && let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}
