//! The `redis` backend: one key per session with a TTL, and a set of session keys per user, on
//! one Redis node or on a Redis Cluster (`redis_cluster`).
//!
//! actix-session ships a Redis store, but its `update` saves the state under a new key when the
//! old one has vanished, so a request racing a logout brings the session back, and it cannot
//! list a user's sessions. This store saves through one Lua script that never re-creates a
//! deleted key and, given a version, saves only onto that version, so two requests of one
//! session cannot overwrite each other; it keeps `user:<id>` sets for /account, cleaned as
//! their sessions expire. Key names hold a SHA-256 of the session key, never the key itself.
//!
//! Keys are laid out for a cluster: every command and script touches one key, so one slot
//! (checked in debug builds by [`super::slots`]), and session keys carry no hash tag, so they
//! spread over every master. The user's set is therefore written by commands of its own,
//! before the session itself: a set may name a session that is gone (it is dropped when the
//! set is listed), never miss one that lives.

use std::time::Duration;

use futures_util::future::try_join_all;
use redis::{
    AsyncCommands as _, Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};

use super::{
    Lifetimes, SessionSummary, key_hash, slots,
    state::{self, State},
};
use crate::domain::now_epoch;

/// How long one store call may take, retries included, before the request answers 503
/// instead of hanging.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Cluster: one attempt's bound, so a retry still fits into [`RESPONSE_TIMEOUT`].
const CLUSTER_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(800);
/// Cluster: connecting to one node (a dead host must not eat the whole budget).
const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Cluster: retries after `MOVED`, `TRYAGAIN`, `CLUSTERDOWN` or a lost node, waiting 50 to
/// 400 ms between them. The crate's defaults (16 retries, waits from 1.28 s) would hold a
/// request far past [`RESPONSE_TIMEOUT`] while a master fails over.
const CLUSTER_RETRIES: u32 = 3;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 50;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 400;

/// Saves a session's state (`version state`) if the key is live and, unless `ARGV[1]` is `*`,
/// still at version `ARGV[1]`; an empty `ARGV[2]` deletes it. Returns the new version, or -1
/// when the key is gone or at another version. A value without a version (written before
/// versions existed) counts as version 0. It touches `KEYS[1]` alone: one slot.
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
end
return v + 1
";

/// One Redis node or a Redis Cluster, behind one interface; clones share the connection.
#[derive(Clone)]
enum Conn {
    /// One node, reconnecting by itself.
    Node(ConnectionManager),
    /// A cluster: the client follows `MOVED`/`ASK` and routes each command by its key's slot.
    Cluster(ClusterConnection),
}

/// In debug builds, what the store sends and a cluster would refuse (`CROSSSLOT`) fails on
/// one node too, before it is sent.
fn slot_check<'a>(cmds: impl IntoIterator<Item = &'a Cmd>) -> redis::RedisResult<()> {
    if cfg!(debug_assertions) {
        slots::check(cmds)
    } else {
        Ok(())
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if let Err(err) = slot_check([cmd]) {
            return Box::pin(std::future::ready(Err(err)));
        }
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if let Err(err) = slot_check(pipeline.cmd_iter()) {
            return Box::pin(std::future::ready(Err(err)));
        }
        match self {
            Self::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// A lazy connection to the node `url`.
    fn node(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        Ok(Self::Node(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }

    /// A lazy connection to the cluster that the comma-separated seed nodes in `urls` belong
    /// to; it learns the other nodes and the slot map from them.
    fn cluster(urls: &str) -> redis::RedisResult<Self> {
        let client = ClusterClient::builder(seed_nodes(urls))
            .connection_timeout(CLUSTER_CONNECT_TIMEOUT)
            .response_timeout(CLUSTER_ATTEMPT_TIMEOUT)
            .overall_response_timeout(Some(RESPONSE_TIMEOUT))
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
            .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
            .build()?;
        // The config's timeouts replace the builder's, so they are given again here.
        let config = ClusterConfig::new()
            .set_connection_timeout(CLUSTER_CONNECT_TIMEOUT)
            .set_response_timeout(CLUSTER_ATTEMPT_TIMEOUT);
        Ok(Self::Cluster(
            client.get_pending_async_connection_with_config(config),
        ))
    }
}

/// The seed nodes of a comma-separated `redis_url`.
pub fn seed_nodes(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Sessions in Redis, shared by every instance that uses the same Redis and prefix.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
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
    /// A store on `url` (with `cluster`, the comma-separated seed nodes of a Redis Cluster)
    /// whose sessions live `lifetimes` past their last save; it connects lazily and reconnects
    /// by itself after an outage.
    pub fn new(
        url: &str,
        cluster: bool,
        prefix: &str,
        lifetimes: Lifetimes,
    ) -> redis::RedisResult<Self> {
        Ok(Self {
            conn: if cluster {
                Conn::cluster(url)?
            } else {
                Conn::node(url)?
            },
            prefix: prefix.to_owned(),
            lifetimes,
        })
    }

    /// The Redis key of a session, by the hash of its session key.
    fn session_key(&self, hash: &str) -> String {
        format!("{}session:{hash}", self.prefix)
    }

    /// The sorted set of guest sessions started within their lifetime (score: when that
    /// lifetime ends). One key, so one slot: every new guest touches one master in a cluster.
    fn guests_key(&self) -> String {
        format!("{}guests", self.prefix)
    }

    /// Guest sessions started and not yet past the lifetime they started with. A guest that
    /// keeps shopping outlives its entry, and one that logs in keeps it until then: close
    /// enough for a bound against floods, and one key instead of a scan of every session.
    pub async fn guest_count(&self) -> redis::RedisResult<u64> {
        let key = self.guests_key();
        let mut conn = self.conn.clone();
        let (count,): (u64,) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now_epoch())
            .ignore()
            .zcard(&key)
            .query_async(&mut conn)
            .await?;
        Ok(count)
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
            // The user's set first: it may name a session that never came to be, never miss
            // one that lives.
            self.index(state::user_id_of(state), &hash, ttl).await?;
            let created: Option<String> = redis::cmd("SET")
                .arg(self.session_key(&hash))
                .arg(&value)
                .arg("NX")
                .arg("EX")
                .arg(ttl_secs(ttl))
                .query_async(&mut conn)
                .await?;
            if created.is_some() {
                if state::user_id_of(state).is_none() && !state.contains_key(state::MOVED) {
                    let expires = now_epoch()
                        .saturating_add(i64::try_from(ttl_secs(ttl)).unwrap_or(i64::MAX / 2));
                    let _: i64 = conn.zadd(self.guests_key(), &hash, expires).await?;
                }
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
        // An ended session leaves the user set when the set is next listed. The set is
        // written first and apart: it lives in another slot than the session.
        if !state.is_empty() {
            self.index(state::user_id_of(state), &hash, ttl).await?;
        }
        let mut conn = self.conn.clone();
        let version: i64 = redis::cmd("EVAL")
            .arg(SWAP)
            .arg(1)
            .arg(self.session_key(&hash))
            .arg(expected.map_or_else(|| "*".to_owned(), |v| v.to_string()))
            .arg(json)
            .arg(ttl_secs(ttl))
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
        // One GET per session, sent together: an MGET would span slots on a cluster.
        let states: Vec<Option<String>> = try_join_all(keys.iter().map(|hash| {
            let mut conn = self.conn.clone();
            let key = self.session_key(hash);
            async move { conn.get::<_, Option<String>>(key).await }
        }))
        .await?;
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

#[cfg(test)]
mod tests {
    use redis::{ErrorKind, ServerErrorKind, Value};

    use super::*;

    /// The slot check sits in the one connection every store command goes through: a
    /// command that a cluster would refuse fails on one node too, before it is sent (the
    /// node here does not even exist).
    #[tokio::test]
    async fn a_command_across_slots_fails_before_it_is_sent_even_on_one_node() {
        let mut conn = Conn::node("redis://127.0.0.1:1").expect("a lazy connection");
        let crossing = redis::cmd("MGET")
            .arg("p:session:abc")
            .arg("p:user:1")
            .query_async::<Value>(&mut conn)
            .await;
        assert!(
            matches!(&crossing, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot)),
            "{crossing:?}"
        );
        let pipelined = redis::pipe()
            .get("p:session:abc")
            .get("p:user:1")
            .query_async::<Value>(&mut conn)
            .await;
        assert!(
            matches!(&pipelined, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot)),
            "{pipelined:?}"
        );
    }

    #[test]
    fn seed_nodes_are_the_comma_separated_urls() {
        assert_eq!(
            seed_nodes(" redis://a:1, redis://b:2,,"),
            ["redis://a:1", "redis://b:2"]
        );
        assert_eq!(seed_nodes("redis://a:1"), ["redis://a:1"]);
    }
}
