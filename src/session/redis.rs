//! The `redis` backend: one key per session with a TTL, and a set of session keys per user.
//!
//! actix-session ships a Redis store, but its `update` saves the state under a new key when the
//! old one has vanished, so a request racing a logout brings the session back, and it cannot
//! list a user's sessions. This store saves through one Lua script that never re-creates a
//! deleted key and, given a version, saves only onto that version, so two requests of one
//! session cannot overwrite each other; it keeps `user:<id>` sets for /account, cleaned as
//! their sessions expire. Key names hold a SHA-256 of the session key, never the key itself.

use std::time::Duration;

use redis::{AsyncCommands as _, aio::ConnectionManager};

use super::{
    Lifetimes, SessionSummary, key_hash,
    state::{self, State},
};

/// How long one Redis command may take before the request answers 503 instead of hanging.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Saves a session's state (`version state`) if the key is live and, unless `ARGV[1]` is `*`,
/// still at version `ARGV[1]`; an empty `ARGV[2]` deletes it. With a second key (the user's
/// set), records the session's hash `ARGV[4]` there, in the same round trip. Returns the new
/// version, or -1 when the key is gone or at another version. A value without a version
/// (written before versions existed) counts as version 0.
const SWAP: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
local v = 0
if string.sub(cur, 1, 1) ~= '{' then
  v = tonumber(string.sub(cur, 1, string.find(cur, ' ', 1, true) - 1)) or 0
end
if ARGV[1] ~= '*' and tostring(v) ~= ARGV[1] then return -1 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], (v + 1) .. ' ' .. ARGV[2], 'EX', ARGV[3])
  if KEYS[2] then
    redis.call('SADD', KEYS[2], ARGV[4])
    redis.call('EXPIRE', KEYS[2], ARGV[3])
  end
end
return v + 1
";

/// Sessions in Redis, shared by every instance that uses the same Redis and prefix.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    /// How long a session lives past its last save.
    lifetimes: Lifetimes,
}

/// A stored value: `<version> <state JSON>`, or the bare JSON of version 0.
fn decode(value: &str) -> Option<(State, u64)> {
    let (version, json) = if value.starts_with('{') {
        (0, value)
    } else {
        let (version, json) = value.split_once(' ')?;
        (version.parse().ok()?, json)
    };
    Some((serde_json::from_str(json).ok()?, version))
}

fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

impl RedisStore {
    /// A store on `url` whose sessions live `lifetimes` past their last save; it connects lazily and
    /// reconnects by itself after an outage.
    pub fn new(url: &str, prefix: &str, lifetimes: Lifetimes) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
            lifetimes,
        })
    }

    /// The Redis key of a session, by the hash of its session key.
    fn session_key(&self, hash: &str) -> String {
        format!("{}session:{hash}", self.prefix)
    }

    fn user_key(&self, user_id: i64) -> String {
        format!("{}user:{user_id}", self.prefix)
    }

    /// Records a session (by hash) among the user's; the set lives as long as its newest session.
    async fn index(
        &self,
        user_id: Option<i64>,
        hash: &str,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        if let Some(user_id) = user_id {
            let set = self.user_key(user_id);
            let mut conn = self.conn.clone();
            redis::pipe()
                .sadd(&set, hash)
                .ignore()
                .expire(&set, i64::try_from(ttl_secs(ttl)).unwrap_or(i64::MAX))
                .ignore()
                .exec_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// The state of a live session and its version.
    pub async fn load_versioned(&self, key: &str) -> redis::RedisResult<Option<(State, u64)>> {
        let mut conn = self.conn.clone();
        let value: Option<String> = conn.get(self.session_key(&key_hash(key))).await?;
        Ok(value.as_deref().and_then(decode))
    }

    /// Stores a new session under a fresh key (`SET NX`, retrying a collision).
    pub async fn save(&self, state: &State, ttl: Duration) -> redis::RedisResult<String> {
        let ttl = self.lifetimes.of(state, ttl);
        let value = format!("0 {}", serde_json::to_string(state).unwrap_or_default());
        let mut conn = self.conn.clone();
        loop {
            let key = state::random_key();
            let hash = key_hash(&key);
            let created: Option<String> = redis::cmd("SET")
                .arg(self.session_key(&hash))
                .arg(&value)
                .arg("NX")
                .arg("EX")
                .arg(ttl_secs(ttl))
                .query_async(&mut conn)
                .await?;
            if created.is_some() {
                self.index(state::user_id_of(state), &hash, ttl).await?;
                return Ok(key);
            }
        }
    }

    /// Runs [`SWAP`]: the new version, or `None` when the key is gone or at another version.
    async fn run_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        state: &State,
        ttl: Duration,
    ) -> redis::RedisResult<Option<u64>> {
        let hash = key_hash(key);
        let ttl = self.lifetimes.of(state, ttl);
        let json = if state.is_empty() {
            String::new()
        } else {
            serde_json::to_string(state).unwrap_or_default()
        };
        let mut conn = self.conn.clone();
        // An ended session leaves the user set when the set is next listed.
        let user_set = state::user_id_of(state)
            .filter(|_| !state.is_empty())
            .map(|id| self.user_key(id));
        let mut eval = redis::cmd("EVAL");
        eval.arg(SWAP)
            .arg(if user_set.is_some() { 2 } else { 1 })
            .arg(self.session_key(&hash));
        if let Some(set) = &user_set {
            eval.arg(set);
        }
        let version: i64 = eval
            .arg(expected.map_or_else(|| "*".to_owned(), |v| v.to_string()))
            .arg(json)
            .arg(ttl_secs(ttl))
            .arg(&hash)
            .query_async(&mut conn)
            .await?;
        Ok(u64::try_from(version).ok())
    }

    /// Saves `state` only if the session is still at version `expected` (an empty state ends
    /// it); returns the new version, or `None` when it changed or ended meanwhile.
    pub async fn swap(
        &self,
        key: &str,
        expected: u64,
        state: &State,
    ) -> redis::RedisResult<Option<u64>> {
        self.run_swap(key, Some(expected), state, self.lifetimes.idle)
            .await
    }

    /// Replaces the state of a live session whatever its version: a session deleted meanwhile
    /// stays deleted.
    pub async fn update(&self, key: &str, state: &State, ttl: Duration) -> redis::RedisResult<()> {
        self.run_swap(key, None, state, ttl).await.map(drop)
    }

    /// Extends a live session.
    pub async fn update_ttl(&self, key: &str, ttl: Duration) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: bool = conn
            .expire(
                self.session_key(&key_hash(key)),
                i64::try_from(ttl_secs(ttl)).unwrap_or(i64::MAX),
            )
            .await?;
        Ok(())
    }

    /// Deletes a session and its entry in the user's set.
    pub async fn delete(&self, key: &str) -> redis::RedisResult<()> {
        self.delete_hashed(&key_hash(key)).await
    }

    async fn delete_hashed(&self, hash: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let old: Option<String> = redis::cmd("GETDEL")
            .arg(self.session_key(hash))
            .query_async(&mut conn)
            .await?;
        let user_id = old
            .as_deref()
            .and_then(decode)
            .and_then(|(s, _)| state::user_id_of(&s));
        if let Some(user_id) = user_id {
            let _: i64 = conn.srem(self.user_key(user_id), hash).await?;
        }
        Ok(())
    }

    /// The user's sessions (by hash) with their state; sessions that expired leave the set.
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
        for (hash, value) in keys.into_iter().zip(states) {
            match value.as_deref().and_then(decode) {
                Some((state, _)) => live.push((hash, state)),
                None => dead.push(hash),
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
                    device: meta.device,
                })
            })
            .collect())
    }

    /// Deletes every session of a user except `keep_sid`'s.
    pub async fn revoke_others(&self, user_id: i64, keep_sid: &str) -> redis::RedisResult<u64> {
        let mut revoked = 0;
        for (hash, state) in self.live_sessions_of(user_id).await? {
            if state::meta_of(&state).is_some_and(|m| m.sid != keep_sid) {
                self.delete_hashed(&hash).await?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// Deletes the session of `user_id` whose id is `sid`; whether there was one (only that
    /// user's set is searched).
    pub async fn revoke(&self, user_id: i64, sid: &str) -> redis::RedisResult<bool> {
        for (hash, state) in self.live_sessions_of(user_id).await? {
            if state::meta_of(&state).is_some_and(|m| m.sid == sid) {
                self.delete_hashed(&hash).await?;
                return Ok(true);
            }
        }
        Ok(false)
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
