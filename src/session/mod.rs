//! Session state: the one store enum over every backend, the typed wrapper, the timeouts, and
//! what each backend promises.

pub mod key;
pub mod memory;
pub mod redis;
pub mod sql;
pub mod state;

use std::time::Duration as StdDuration;

use actix_session::SessionExt as _;
use actix_session::storage::{
    CookieSessionStore, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::{
    body::MessageBody,
    cookie::time::Duration,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};

use crate::{
    config::{SessionBackend, Settings},
    db::Db,
    domain::now_epoch,
};
use memory::MemoryStore;
use redis::RedisStore;
use sql::SqlStore;
use state::{State, TypedSession};

/// Name of the session cookie when it is not `Secure` (see `Settings::cookie_name`).
pub const COOKIE_NAME: &str = "statecart";

/// Browsers refuse cookies larger than this (name and value, as sent).
pub const MAX_COOKIE_BYTES: usize = 4096;

/// Bytes kept free for the varying percent-encoding of a fresh encryption (see
/// [`CookieBudget::fits`]): about seven standard deviations at a 4 KiB cookie.
pub const ENCODING_MARGIN: usize = 96;

/// What a change to the session may cost: on the cookie backend the whole state travels in the
/// cookie, so a change that would push it past [`MAX_COOKIE_BYTES`] is refused up front
/// instead of being dropped silently by the browser.
#[derive(Clone)]
pub enum CookieBudget {
    /// Server-side state: the cookie holds only a key.
    Unlimited,
    /// The state is encrypted into the cookie with this key, under this cookie name.
    Cookie(actix_web::cookie::Key, &'static str),
}

impl CookieBudget {
    /// The budget for `backend`.
    pub fn new(backend: SessionBackend, key: &actix_web::cookie::Key, name: &'static str) -> Self {
        match backend {
            SessionBackend::Cookie => Self::Cookie(key.clone(), name),
            _ => Self::Unlimited,
        }
    }

    /// Exact size of the cookie this state would become (encrypted and encoded), if it
    /// lives in the cookie.
    pub fn cookie_bytes(&self, state: &State) -> Option<usize> {
        let Self::Cookie(key, name) = self else {
            return None;
        };
        let json = serde_json::to_string(state).ok()?;
        let mut jar = actix_web::cookie::CookieJar::new();
        jar.private_mut(key)
            .add(actix_web::cookie::Cookie::new(*name, json));
        let cookie = jar.delta().next()?;
        Some(cookie.encoded().to_string().len())
    }

    /// Whether a session with this state can be kept.
    ///
    /// The cookie that is finally sent is a fresh encryption (a new random nonce) of the same
    /// state: its base64 text has the same length, but each `/` in it is percent-encoded to
    /// three bytes, and how many there are varies. With about 1 in 64 characters a `/`, the
    /// spread is a few dozen bytes; [`ENCODING_MARGIN`] keeps the real cookie under the limit
    /// with overwhelming probability.
    pub fn fits(&self, state: &State) -> bool {
        match self {
            Self::Unlimited => true,
            Self::Cookie(..) => self
                .cookie_bytes(state)
                .is_some_and(|bytes| bytes + ENCODING_MARGIN <= MAX_COOKIE_BYTES),
        }
    }
}

/// One login session as /account lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// The random id kept in the session state.
    pub sid: String,
    /// Login time, epoch seconds.
    pub created_at: i64,
    /// Last recorded activity, epoch seconds.
    pub last_seen_at: i64,
}

/// The session store of the configured backend. Built once before the server starts and
/// cloned into every worker (clones share the same sessions).
#[derive(Clone)]
pub enum Store {
    /// State in the encrypted cookie itself; the server keeps nothing.
    Cookie,
    /// State in this process's memory.
    Memory(MemoryStore),
    /// State in the app database.
    Database(SqlStore),
    /// State in Redis.
    Redis(RedisStore),
}

/// The session store did not answer.
#[derive(Debug, thiserror::Error)]
#[error("session store failed: {0}")]
pub struct StoreError(String);

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        Self(err.to_string())
    }
}

impl From<::redis::RedisError> for StoreError {
    fn from(err: ::redis::RedisError) -> Self {
        Self(err.to_string())
    }
}

fn std_duration(ttl: &Duration) -> StdDuration {
    ttl.unsigned_abs()
}

fn session_key(key: String) -> Result<SessionKey, anyhow::Error> {
    SessionKey::try_from(key).map_err(anyhow::Error::from)
}

impl Store {
    /// The store for `settings.session_backend`.
    pub fn build(settings: &Settings, db: &Db) -> anyhow::Result<Self> {
        Ok(match settings.session_backend {
            SessionBackend::Cookie => Self::Cookie,
            SessionBackend::Memory => Self::Memory(MemoryStore::new(
                settings.memory_max_sessions,
                StdDuration::from_secs(settings.idle_timeout_secs),
            )),
            SessionBackend::Database => Self::Database(SqlStore::new(db.clone())),
            SessionBackend::Redis => Self::Redis(
                RedisStore::new(&settings.redis_url, &settings.redis_key_prefix)
                    .map_err(|e| anyhow::anyhow!("redis_url: {e}"))?,
            ),
        })
    }

    /// Whether this store can list and revoke a user's sessions (the cookie one cannot).
    pub fn can_list(&self) -> bool {
        !matches!(self, Self::Cookie)
    }

    /// The live sessions of a user; `None` when the backend cannot know them.
    pub async fn sessions_of(
        &self,
        user_id: i64,
    ) -> Result<Option<Vec<SessionSummary>>, StoreError> {
        Ok(match self {
            Self::Cookie => None,
            Self::Memory(m) => Some(m.sessions_of(user_id).await),
            Self::Database(s) => Some(s.sessions_of(user_id).await?),
            Self::Redis(r) => Some(r.sessions_of(user_id).await?),
        })
    }

    /// Ends every session of a user but `keep_sid`'s; returns how many ended.
    pub async fn revoke_others(&self, user_id: i64, keep_sid: &str) -> Result<u64, StoreError> {
        Ok(match self {
            Self::Cookie => 0,
            Self::Memory(m) => m.revoke_others(user_id, keep_sid).await,
            Self::Database(s) => s.revoke_others(user_id, keep_sid).await?,
            Self::Redis(r) => r.revoke_others(user_id, keep_sid).await?,
        })
    }

    /// Bytes the server keeps for a session with these entries (0 for the cookie backend).
    pub fn stored_bytes(&self, entries: &[(String, String)]) -> usize {
        if matches!(self, Self::Cookie) || entries.is_empty() {
            return 0;
        }
        let state: usize = entries
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>()
            + 2;
        // Memory: the state plus the 64-byte key; database: state, key hash, sid and four times.
        match self {
            Self::Database(_) => state + 64 + 24 + 4 * 8,
            _ => state + 64,
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        match self {
            Self::Cookie | Self::Memory(_) => true,
            Self::Database(s) => s.ping().await,
            Self::Redis(r) => r.ping().await,
        }
    }

    /// Frees expired sessions now (the background task calls this every minute).
    pub async fn housekeeping(&self) {
        match self {
            Self::Cookie => {}
            Self::Memory(m) => m.run_housekeeping().await,
            Self::Database(s) => match s.delete_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "purged expired sessions"),
                Err(err) => tracing::warn!(error = %err, "could not purge expired sessions"),
            },
            // Redis expires keys itself; user sets are cleaned when listed.
            Self::Redis(_) => {}
        }
    }
}

impl SessionStore for Store {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        match self {
            Self::Cookie => CookieSessionStore::default().load(key).await,
            Self::Memory(m) => Ok(m.load(key.as_ref()).await),
            Self::Database(s) => s
                .load(key.as_ref())
                .await
                .map_err(|e| LoadError::Other(e.into())),
            Self::Redis(r) => r
                .load(key.as_ref())
                .await
                .map_err(|e| LoadError::Other(e.into())),
        }
    }

    async fn save(&self, state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        match self {
            Self::Cookie => CookieSessionStore::default().save(state, ttl).await,
            // An empty state is not worth keeping: hand out a key that loads as "no session".
            _ if state.is_empty() => session_key(state::random_key()).map_err(SaveError::Other),
            Self::Memory(m) => session_key(m.save(state).await).map_err(SaveError::Other),
            Self::Database(s) => {
                let key = s
                    .save(&state, std_duration(ttl))
                    .await
                    .map_err(|e| SaveError::Other(e.into()))?;
                session_key(key).map_err(SaveError::Other)
            }
            Self::Redis(r) => {
                let key = r
                    .save(&state, std_duration(ttl))
                    .await
                    .map_err(|e| SaveError::Other(e.into()))?;
                session_key(key).map_err(SaveError::Other)
            }
        }
    }

    async fn update(
        &self,
        key: SessionKey,
        state: State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        match self {
            Self::Cookie => CookieSessionStore::default().update(key, state, ttl).await,
            _ if state.is_empty() => {
                self.delete(&key).await.map_err(UpdateError::Other)?;
                Ok(key)
            }
            Self::Memory(m) => {
                m.update(key.as_ref(), state).await;
                Ok(key)
            }
            Self::Database(s) => {
                s.update(key.as_ref(), &state, std_duration(ttl))
                    .await
                    .map_err(|e| UpdateError::Other(e.into()))?;
                Ok(key)
            }
            Self::Redis(r) => {
                r.update(key.as_ref(), &state, std_duration(ttl))
                    .await
                    .map_err(|e| UpdateError::Other(e.into()))?;
                Ok(key)
            }
        }
    }

    async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        match self {
            Self::Cookie => Ok(()),
            // moka refreshes idle time on every read.
            Self::Memory(_) => Ok(()),
            Self::Database(s) => Ok(s.update_ttl(key.as_ref(), std_duration(ttl)).await?),
            Self::Redis(r) => Ok(r.update_ttl(key.as_ref(), std_duration(ttl)).await?),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        match self {
            Self::Cookie => Ok(()),
            Self::Memory(m) => {
                m.delete(key.as_ref()).await;
                Ok(())
            }
            Self::Database(s) => Ok(s.delete(key.as_ref()).await?),
            Self::Redis(r) => Ok(r.delete(key.as_ref()).await?),
        }
    }
}

/// How often a login's last-seen time is rewritten: often enough for the idle timeout to be
/// accurate, rarely enough that reading a page is not a write on every request.
pub fn touch_interval_secs(idle_timeout_secs: u64) -> i64 {
    i64::try_from((idle_timeout_secs / 30).clamp(1, 60)).unwrap_or(60)
}

/// What a person reads when their browser brings a session the server no longer has.
pub const SESSION_ENDED: &str = "Your session has ended (it expired, was ended elsewhere, or \
     the server no longer has it). Please log in again.";

fn carries_session_cookie(req: &ServiceRequest, name: &str) -> bool {
    req.cookie(name).is_some()
}

/// Enforces the idle and absolute timeouts on every backend, the cookie one included: the
/// times live inside the (encrypted) state and are checked on each request.
pub async fn enforce_timeouts(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(settings) = req.app_data::<web::Data<Settings>>() {
        let session = TypedSession::of(req.get_session());
        if let Some(meta) = session.meta() {
            let now = now_epoch();
            let idle = i64::try_from(settings.idle_timeout_secs).unwrap_or(i64::MAX);
            let absolute = i64::try_from(settings.absolute_timeout_secs).unwrap_or(i64::MAX);
            if now.saturating_sub(meta.issued_at) >= absolute {
                session.expire("Your session reached its maximum length. Please log in again.");
            } else if now.saturating_sub(meta.last_seen) >= idle {
                session.expire(
                    "Your session ended after a period of inactivity. Please log in again.",
                );
            } else if now.saturating_sub(meta.last_seen)
                >= touch_interval_secs(settings.idle_timeout_secs)
            {
                session.touch(meta, now);
            }
        } else if session.is_empty() && carries_session_cookie(&req, settings.cookie_name()) {
            // The browser holds a session the server no longer knows (expired from the store,
            // revoked, or lost in a restart of the memory backend): say so once.
            session.set_flash(true, SESSION_ENDED);
        }
    }
    next.call(req).await
}

/// What one backend promises, in the words of the design table (shown on /about and /session).
#[derive(Debug, Clone, Copy)]
pub struct BackendFacts {
    /// Where session and cart live.
    pub location: &'static str,
    /// Whether state survives a graceful restart.
    pub restart: &'static str,
    /// Whether state survives a crash (SIGKILL).
    pub crash: &'static str,
    /// Whether several instances can share it.
    pub instances: &'static str,
    /// Whether logout revokes on the server.
    pub revocation: &'static str,
}

/// The design table row for `backend`.
pub fn facts(backend: SessionBackend) -> BackendFacts {
    match backend {
        SessionBackend::Cookie => BackendFacts {
            location: "an encrypted (private) cookie in your browser; the server is stateless",
            restart: "yes, while the session key is kept",
            crash: "yes: there is nothing on the server to lose",
            instances: "yes, when every instance shares the session key",
            revocation: "no: an old cookie replays until it expires",
        },
        SessionBackend::Memory => BackendFacts {
            location: "this process's memory, bounded, with idle expiry",
            restart: "no",
            crash: "no",
            instances: "no: each instance has its own memory (needs sticky routing)",
            revocation: "yes",
        },
        SessionBackend::Database => BackendFacts {
            location: "the sessions table of the app database",
            restart: "yes",
            crash: "yes, every committed write",
            instances: "yes on PostgreSQL; on SQLite, instances on one host sharing the file",
            revocation: "yes",
        },
        SessionBackend::Redis => BackendFacts {
            location: "Redis keys with a time-to-live",
            restart: "yes, if Redis keeps its data",
            crash: "yes",
            instances: "yes",
            revocation: "yes",
        },
    }
}
