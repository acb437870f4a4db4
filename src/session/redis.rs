//! The `redis` backend: one key per session with a TTL, and a set of session keys per user.
//!
//! actix-session ships a Redis store, but its `update` saves the state under a new key when the
//! old one has vanished, so a request racing a logout brings the session back, and it cannot
//! list a user's sessions. This store uses `SET ... XX` for updates (never re-creating) and
//! keeps `user:<id>` sets for /account, cleaned as their sessions expire.

use std::time::Duration;

use redis::{AsyncCommands as _, aio::ConnectionManager};

use super::{
    SessionSummary,
    state::{self, State},
};

/// How long one Redis command may take before the request answers 503 instead of hanging.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sessions in Redis, shared by every instance that uses the same Redis and prefix.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

impl RedisStore {
    /// A store on `url`; it connects lazily and reconnects by itself after an outage.
    pub fn new(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
        })
    }

    fn session_key(&self, key: &str) -> String {
        format!("{}session:{key}", self.prefix)
    }

    fn user_key(&self, user_id: i64) -> String {
        format!("{}user:{user_id}", self.prefix)
    }

    /// Records `key` among the user's sessions; the set lives as long as its newest session.
    async fn index(
        &self,
        user_id: Option<i64>,
        key: &str,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        if let Some(user_id) = user_id {
            let set = self.user_key(user_id);
            let mut conn = self.conn.clone();
            redis::pipe()
                .sadd(&set, key)
                .ignore()
                .expire(&set, i64::try_from(ttl_secs(ttl)).unwrap_or(i64::MAX))
                .ignore()
                .exec_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// The state of a live session.
    pub async fn load(&self, key: &str) -> redis::RedisResult<Option<State>> {
        let mut conn = self.conn.clone();
        let json: Option<String> = conn.get(self.session_key(key)).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Stores a new session under a fresh key (`SET NX`, retrying a collision).
    pub async fn save(&self, state: &State, ttl: Duration) -> redis::RedisResult<String> {
        let json = serde_json::to_string(state).unwrap_or_default();
        let mut conn = self.conn.clone();
        loop {
            let key = state::random_key();
            let created: Option<String> = redis::cmd("SET")
                .arg(self.session_key(&key))
                .arg(&json)
                .arg("NX")
                .arg("EX")
                .arg(ttl_secs(ttl))
                .query_async(&mut conn)
                .await?;
            if created.is_some() {
                self.index(state::user_id_of(state), &key, ttl).await?;
                return Ok(key);
            }
        }
    }

    /// Replaces the state of a live session (`SET XX`): a session deleted meanwhile stays deleted.
    pub async fn update(&self, key: &str, state: &State, ttl: Duration) -> redis::RedisResult<()> {
        let json = serde_json::to_string(state).unwrap_or_default();
        let mut conn = self.conn.clone();
        let updated: Option<String> = redis::cmd("SET")
            .arg(self.session_key(key))
            .arg(json)
            .arg("XX")
            .arg("EX")
            .arg(ttl_secs(ttl))
            .query_async(&mut conn)
            .await?;
        if updated.is_some() {
            self.index(state::user_id_of(state), key, ttl).await?;
        }
        Ok(())
    }

    /// Extends a live session.
    pub async fn update_ttl(&self, key: &str, ttl: Duration) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: bool = conn
            .expire(
                self.session_key(key),
                i64::try_from(ttl_secs(ttl)).unwrap_or(i64::MAX),
            )
            .await?;
        Ok(())
    }

    /// Deletes a session and its entry in the user's set.
    pub async fn delete(&self, key: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let old: Option<String> = redis::cmd("GETDEL")
            .arg(self.session_key(key))
            .query_async(&mut conn)
            .await?;
        let user_id = old
            .and_then(|j| serde_json::from_str::<State>(&j).ok())
            .and_then(|s| state::user_id_of(&s));
        if let Some(user_id) = user_id {
            let _: i64 = conn.srem(self.user_key(user_id), key).await?;
        }
        Ok(())
    }

    /// The user's sessions with their state; keys whose session expired leave the set.
    async fn live_sessions_of(&self, user_id: i64) -> redis::RedisResult<Vec<(String, State)>> {
        let mut conn = self.conn.clone();
        let set = self.user_key(user_id);
        let keys: Vec<String> = conn.smembers(&set).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.session_key(k)).collect();
        let states: Vec<Option<String>> =
            redis::cmd("MGET").arg(&full).query_async(&mut conn).await?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (key, json) in keys.into_iter().zip(states) {
            match json.and_then(|j| serde_json::from_str::<State>(&j).ok()) {
                Some(state) => live.push((key, state)),
                None => dead.push(key),
            }
        }
        if !dead.is_empty() {
            let _: i64 = conn.srem(&set, dead).await?;
        }
        Ok(live)
    }

    /// The live sessions of a user.
    pub async fn sessions_of(&self, user_id: i64) -> redis::RedisResult<Vec<SessionSummary>> {
        Ok(self
            .live_sessions_of(user_id)
            .await?
            .into_iter()
            .filter_map(|(_, state)| {
                let meta = state::meta_of(&state)?;
                Some(SessionSummary {
                    sid: meta.sid,
                    created_at: meta.issued_at,
                    last_seen_at: meta.last_seen,
                })
            })
            .collect())
    }

    /// Deletes every session of a user except `keep_sid`'s.
    pub async fn revoke_others(&self, user_id: i64, keep_sid: &str) -> redis::RedisResult<u64> {
        let mut revoked = 0;
        for (key, state) in self.live_sessions_of(user_id).await? {
            if state::meta_of(&state).is_some_and(|m| m.sid != keep_sid) {
                self.delete(&key).await?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }
}
