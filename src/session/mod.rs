//! Session state: the one store enum over every backend. Beside it: the typed session and its
//! one write path (`state`), the cookie budget, the timeouts, and what each backend promises.

pub mod budget;
pub mod guests;
pub mod key;
pub mod memory;
pub mod promises;
pub mod redis;
pub mod revocation;
pub mod slots;
pub mod sql;
pub mod state;
pub mod timeouts;

use std::time::Duration as StdDuration;

use actix_session::storage::{
    CookieSessionStore, LoadError, SaveError, SessionKey, SessionStore, UpdateError,
};
use actix_web::cookie::time::Duration;
use sha2::{Digest as _, Sha256};

use crate::{
    config::{SessionBackend, Settings},
    db::Db,
    metrics::StoreOp,
};
pub use budget::{CookieBudget, ENCODING_MARGIN, MAX_COOKIE_BYTES};
use memory::MemoryStore;
pub use promises::{BackendFacts, facts, facts_as_configured, promises_as_configured};
use redis::RedisStore;
use revocation::Revocation;
use sql::SqlStore;
use state::{LOADED, Loaded, State};
pub use timeouts::{SESSION_ENDED, enforce_timeouts, touch_interval_secs};

/// Name of the session cookie when it is not `Secure` (see `Settings::cookie_name`).
pub const COOKIE_NAME: &str = "statecart";

/// How long a [`state::MOVED`] marker is kept after a login took its record over.
pub const MOVED_KEPT: StdDuration = StdDuration::from_secs(120);

/// How long server-side stores keep a session past its last save: the idle timeout for a
/// login, the (shorter) guest one for a session without a login.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// `idle_timeout_secs`.
    pub idle: StdDuration,
    /// `guest_idle_timeout_secs`.
    pub guest: StdDuration,
}

impl Lifetimes {
    /// The lifetime of a session with this state; `ttl` is what the session middleware asks.
    /// A record a login moved away from lives only as long as a request still on its way
    /// with the old key might need to be told so.
    pub fn of(&self, state: &State, ttl: StdDuration) -> StdDuration {
        if state::user_id_of(state).is_some() {
            ttl
        } else if state.contains_key(state::MOVED) {
            ttl.min(self.guest).min(MOVED_KEPT)
        } else {
            ttl.min(self.guest)
        }
    }
}

/// Hex SHA-256 of a session key: how server-side stores name a session, so a leaked table or
/// key space cannot be replayed as cookies.
pub fn key_hash(key: &str) -> String {
    crate::domain::hex(&Sha256::digest(key.as_bytes()))
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
    /// The device label recorded at login (empty for a login older than labels).
    pub device: String,
}

impl SessionSummary {
    /// The session to end first when a user has too many: the least recently active, then
    /// the oldest login, then by id, so the choice never depends on listing order.
    fn eviction_order(&self) -> (i64, i64, &str) {
        (self.last_seen_at, self.created_at, &self.sid)
    }
}

/// The session store of the configured backend. Built once before the server starts and
/// cloned into every worker (clones share the same sessions).
#[derive(Clone)]
pub enum Store {
    /// State in the encrypted cookie itself; the server keeps nothing, unless
    /// `cookie_revocation` keeps the least that makes logout real.
    Cookie(Option<Revocation>),
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
        let idle = settings.idle_timeout;
        let guest_idle = settings.guest_idle_timeout;
        let lifetimes = Lifetimes {
            idle,
            guest: guest_idle,
        };
        Ok(match settings.session_backend {
            SessionBackend::Cookie => Self::Cookie(
                settings
                    .cookie_revocation
                    .then(|| Revocation::new(db.clone(), idle)),
            ),
            SessionBackend::Memory => Self::Memory(
                MemoryStore::new(settings.memory_max_sessions, idle)
                    .with_guests(settings.memory_max_guest_sessions, guest_idle),
            ),
            SessionBackend::Database => Self::Database(SqlStore::new(db.clone(), lifetimes)),
            SessionBackend::Redis => Self::Redis(
                RedisStore::new(
                    &settings.redis_url,
                    settings.redis_cluster,
                    &settings.redis_key_prefix,
                    lifetimes,
                )
                .map_err(|e| anyhow::anyhow!("redis_url: {e}"))?,
            ),
        })
    }

    /// The state of a live server-side session and its version (`None` on the cookie
    /// backend, which keeps nothing).
    pub async fn load_versioned(&self, key: &str) -> Result<Option<(State, u64)>, StoreError> {
        let _timer = crate::metrics::store_op(StoreOp::Load);
        Ok(match self {
            Self::Cookie(_) => None,
            Self::Memory(m) => m.load_versioned(key).await,
            Self::Database(s) => s.load_versioned(key).await?,
            Self::Redis(r) => r.load_versioned(key).await?,
        })
    }

    /// Saves `state` only onto version `expected` of a live session (an empty state ends it):
    /// the new version, or `None` when another save came first or the session ended.
    pub async fn swap(
        &self,
        key: &str,
        expected: u64,
        state: &State,
    ) -> Result<Option<u64>, StoreError> {
        let _timer = crate::metrics::store_op(StoreOp::Save);
        Ok(match self {
            Self::Cookie(_) => None,
            Self::Memory(m) => m.swap(key, expected, state).await,
            Self::Database(s) => s.swap(key, expected, state).await?,
            Self::Redis(r) => r.swap(key, expected, state).await?,
        })
    }

    /// The revocation state of the cookie backend with `cookie_revocation`, if on.
    pub fn revocation(&self) -> Option<&Revocation> {
        match self {
            Self::Cookie(revocation) => revocation.as_ref(),
            _ => None,
        }
    }

    /// Whether this store can list and revoke a user's sessions (the cookie one only with
    /// `cookie_revocation`, from the list it keeps in the app database).
    pub fn can_list(&self) -> bool {
        !matches!(self, Self::Cookie(None))
    }

    /// The live sessions of a user; `None` when the backend cannot know them.
    pub async fn sessions_of(
        &self,
        user_id: i64,
    ) -> Result<Option<Vec<SessionSummary>>, StoreError> {
        let _timer = crate::metrics::store_op(StoreOp::List);
        Ok(match self {
            Self::Cookie(None) => None,
            Self::Cookie(Some(r)) => Some(r.sessions_of(user_id).await?),
            Self::Memory(m) => Some(m.sessions_of(user_id).await),
            Self::Database(s) => Some(s.sessions_of(user_id).await?),
            Self::Redis(r) => Some(r.sessions_of(user_id).await?),
        })
    }

    /// Ends the one session of `user_id` whose id is `sid`; whether there was one. A session
    /// of another user is never found, whatever its id.
    pub async fn revoke(&self, user_id: i64, sid: &str) -> Result<bool, StoreError> {
        Ok(match self {
            Self::Cookie(None) => false,
            Self::Cookie(Some(r)) => r.revoke_listed(user_id, sid).await?,
            Self::Memory(m) => m.revoke(user_id, sid).await,
            Self::Database(s) => s.revoke(user_id, sid).await?,
            Self::Redis(r) => r.revoke(user_id, sid).await?,
        })
    }

    /// Keeps a user within `max` sessions when a login is about to add one: ends the least
    /// recently active of the others until, with the new one, there are `max`. `keep` names
    /// the new login and the one it replaces in this browser (which ends with the login
    /// anyway), neither of which counts. Returns what was ended, least recently active first.
    pub async fn end_beyond_cap(
        &self,
        user_id: i64,
        keep: &[&str],
        max: usize,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let Some(mut others) = self.sessions_of(user_id).await? else {
            return Ok(Vec::new());
        };
        others.retain(|s| !keep.contains(&s.sid.as_str()));
        let excess = (others.len() + 1).saturating_sub(max.max(1));
        others.sort_by(|a, b| a.eviction_order().cmp(&b.eviction_order()));
        let mut ended = Vec::with_capacity(excess);
        for session in others.into_iter().take(excess) {
            // One that ended meanwhile (revoked, expired) made room by itself.
            if self.revoke(user_id, &session.sid).await? {
                ended.push(session);
            }
        }
        Ok(ended)
    }

    /// Ends every session of a user but `keep_sid`'s; returns how many ended.
    pub async fn revoke_others(&self, user_id: i64, keep_sid: &str) -> Result<u64, StoreError> {
        let _timer = crate::metrics::store_op(StoreOp::Delete);
        Ok(match self {
            Self::Cookie(_) => 0,
            Self::Memory(m) => m.revoke_others(user_id, keep_sid).await,
            Self::Database(s) => s.revoke_others(user_id, keep_sid).await?,
            Self::Redis(r) => r.revoke_others(user_id, keep_sid).await?,
        })
    }

    /// Bytes the server keeps for a session with these entries (0 for the cookie backend).
    pub fn stored_bytes(&self, entries: &[(String, String)]) -> usize {
        if matches!(self, Self::Cookie(_)) || entries.is_empty() {
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

    /// Sessions (all, and guests) the memory backend holds now; `None` on the other backends.
    pub async fn memory_sessions(&self) -> Option<(u64, u64)> {
        let Self::Memory(m) = self else {
            return None;
        };
        m.run_housekeeping().await;
        Some((m.len(), m.guests()))
    }

    /// Whether the store can count its guest sessions cheaply (and so bound them).
    pub fn counts_guests(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Redis(_))
    }

    /// Live guest sessions (no login) the store holds now; 0 where it cannot count them.
    pub async fn guest_count(&self) -> Result<u64, StoreError> {
        Ok(match self {
            Self::Database(s) => s.guest_count().await?,
            Self::Redis(r) => r.guest_count().await?,
            Self::Memory(m) => m.guests(),
            Self::Cookie(_) => 0,
        })
    }

    /// Deletes a session by compare-and-set on the state as it is now, except a record a
    /// login moved away from: that one stays until it expires, so a request still holding its
    /// key is told the login moved it instead of starting a new session.
    async fn end(&self, key: &str) -> Result<(), StoreError> {
        let mut loaded = self.load_versioned(key).await?;
        for _ in 0..16 {
            let Some((state, version)) = loaded else {
                return Ok(());
            };
            if state.contains_key(state::MOVED) {
                return Ok(());
            }
            if self.swap(key, version, &State::new()).await?.is_some() {
                return Ok(());
            }
            loaded = self.load_versioned(key).await?;
        }
        Err(StoreError(
            "a session kept changing while it was being deleted".to_owned(),
        ))
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        match self {
            Self::Cookie(_) | Self::Memory(_) => true,
            Self::Database(s) => s.ping().await,
            Self::Redis(r) => r.ping().await,
        }
    }

    /// Frees expired sessions now (the background task calls this every minute).
    pub async fn housekeeping(&self) {
        match self {
            Self::Cookie(None) => {}
            Self::Cookie(Some(r)) => match r.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(forgotten = n, "forgot expired revoked cookie sessions"),
                Err(err) => tracing::warn!(error = %err, "could not purge revoked cookie sessions"),
            },
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

/// Bookkeeping of a state on its way back to a store: which version it was loaded at, and
/// whether the request already saved it itself (through `TypedSession::change`).
fn take_loaded(state: &mut State) -> Option<Loaded> {
    state
        .remove(LOADED)
        .and_then(|json| serde_json::from_str(&json).ok())
}

/// The key a store saved a new state under, as the middleware wants it.
fn handed_out<E: Into<anyhow::Error>>(saved: Result<String, E>) -> Result<SessionKey, SaveError> {
    saved
        .map_err(Into::into)
        .and_then(session_key)
        .map_err(SaveError::Other)
}

/// The same key again once a store has updated the state under it.
fn kept<E: Into<anyhow::Error>>(
    updated: Result<(), E>,
    key: SessionKey,
) -> Result<SessionKey, UpdateError> {
    updated.map_err(|e| UpdateError::Other(e.into()))?;
    Ok(key)
}

/// actix-session's store interface: the middleware loads the state before the handler and
/// hands it back after. Server-side stores add [`Loaded`] (key and version) to what they load,
/// so the typed session can save its changes with compare-and-swap; a state that comes back
/// already saved costs nothing more.
impl SessionStore for Store {
    async fn load(&self, key: &SessionKey) -> Result<Option<State>, LoadError> {
        if let Self::Cookie(_) = self {
            return CookieSessionStore::default().load(key).await;
        }
        let loaded = self
            .load_versioned(key.as_ref())
            .await
            .map_err(|e| LoadError::Other(e.into()))?;
        Ok(loaded.map(|(mut state, v)| {
            let loaded = Loaded {
                k: key.as_ref().to_owned(),
                v,
                saved: false,
            };
            state.insert(
                LOADED.to_owned(),
                serde_json::to_string(&loaded).unwrap_or_default(),
            );
            state
        }))
    }

    async fn save(&self, mut state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        let _timer = crate::metrics::store_op(StoreOp::Save);
        take_loaded(&mut state);
        match self {
            Self::Cookie(_) => CookieSessionStore::default().save(state, ttl).await,
            // An empty state is not worth keeping: hand out a key that loads as "no session".
            _ if state.is_empty() => session_key(state::random_key()).map_err(SaveError::Other),
            Self::Memory(m) => session_key(m.save(state).await).map_err(SaveError::Other),
            Self::Database(s) => handed_out(s.save(&state, std_duration(ttl)).await),
            Self::Redis(r) => handed_out(r.save(&state, std_duration(ttl)).await),
        }
    }

    async fn update(
        &self,
        key: SessionKey,
        mut state: State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        match take_loaded(&mut state) {
            Some(loaded) if loaded.saved => return Ok(key),
            // Changed without the typed session's write path: still never onto a newer state.
            Some(loaded) => {
                let saved = self
                    .swap(key.as_ref(), loaded.v, &state)
                    .await
                    .map_err(|e| UpdateError::Other(e.into()))?;
                if saved.is_none() {
                    crate::metrics::cas_conflict();
                    tracing::warn!("a session save lost to a newer one and was dropped");
                }
                return Ok(key);
            }
            None => {}
        }
        match self {
            Self::Cookie(_) => CookieSessionStore::default().update(key, state, ttl).await,
            _ if state.is_empty() => {
                self.delete(&key).await.map_err(UpdateError::Other)?;
                Ok(key)
            }
            Self::Memory(m) => {
                m.update(key.as_ref(), state).await;
                Ok(key)
            }
            Self::Database(s) => kept(s.update(key.as_ref(), &state, std_duration(ttl)).await, key),
            Self::Redis(r) => kept(r.update(key.as_ref(), &state, std_duration(ttl)).await, key),
        }
    }

    async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        match self {
            Self::Cookie(_) => Ok(()),
            // moka refreshes idle time on every read.
            Self::Memory(_) => Ok(()),
            Self::Database(s) => Ok(s.update_ttl(key.as_ref(), std_duration(ttl)).await?),
            Self::Redis(r) => Ok(r.update_ttl(key.as_ref(), std_duration(ttl)).await?),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        let _timer = crate::metrics::store_op(StoreOp::Delete);
        match self {
            Self::Cookie(_) => Ok(()),
            _ => Ok(self.end(key.as_ref()).await?),
        }
    }
}
