//! The `database` backend: one row per session in the app database (SQLite or PostgreSQL).

use std::time::Duration;

use super::{
    Lifetimes, SessionSummary, key_hash,
    state::{self, State},
};
use crate::{db::Db, domain::now_epoch};

/// Sessions as rows, found by a SHA-256 of the key (the key itself is never stored).
#[derive(Clone)]
pub struct SqlStore {
    db: Db,
    /// How long a session lives past its last save.
    lifetimes: Lifetimes,
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2)
}

impl SqlStore {
    /// A store on the app database's pool whose sessions live `lifetimes` past their last save.
    pub fn new(db: Db, lifetimes: Lifetimes) -> Self {
        Self { db, lifetimes }
    }

    /// The state of a live session and its version.
    pub async fn load_versioned(&self, key: &str) -> Result<Option<(State, u64)>, sqlx::Error> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT state, version FROM sessions WHERE key_hash = $1 AND expires_at > $2",
        )
        .bind(key_hash(key))
        .bind(now_epoch())
        .fetch_optional(&self.db.pool)
        .await?;
        // Undecodable state is treated as no session rather than an error.
        Ok(row.and_then(|(json, version)| {
            let state = serde_json::from_str(&json).ok()?;
            Some((state, u64::try_from(version).unwrap_or_default()))
        }))
    }

    /// Saves `state` only if the row is still live at version `expected` (an empty state ends
    /// the session); returns the new version, or `None` when it changed or ended meanwhile.
    /// One statement: the database's row lock makes the check and the write atomic.
    pub async fn swap(
        &self,
        key: &str,
        expected: u64,
        state: &State,
    ) -> Result<Option<u64>, sqlx::Error> {
        let expected_i = i64::try_from(expected).unwrap_or(i64::MAX);
        let now = now_epoch();
        let changed = if state.is_empty() {
            sqlx::query("DELETE FROM sessions WHERE key_hash = $1 AND version = $2")
                .bind(key_hash(key))
                .bind(expected_i)
                .execute(&self.db.pool)
                .await?
        } else {
            let json =
                serde_json::to_string(state).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let meta = state::meta_of(state);
            sqlx::query(
                "UPDATE sessions SET state = $3, sid = $4, user_id = $5, last_seen_at = $6, \
                 expires_at = $7, version = version + 1 \
                 WHERE key_hash = $1 AND version = $2 AND expires_at > $8",
            )
            .bind(key_hash(key))
            .bind(expected_i)
            .bind(&json)
            .bind(meta.as_ref().map(|m| m.sid.clone()))
            .bind(state::user_id_of(state))
            .bind(meta.map_or(now, |m| m.last_seen))
            .bind(now.saturating_add(ttl_secs(self.lifetimes.of(state, self.lifetimes.idle))))
            .bind(now)
            .execute(&self.db.pool)
            .await?
        };
        Ok((changed.rows_affected() == 1).then_some(expected + 1))
    }

    /// Inserts a new session under a fresh key, retrying on the (astronomically rare) collision.
    pub async fn save(&self, state: &State, ttl: Duration) -> Result<String, sqlx::Error> {
        let json = serde_json::to_string(state).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let now = now_epoch();
        let meta = state::meta_of(state);
        loop {
            let key = state::random_key();
            let inserted = sqlx::query(
                "INSERT INTO sessions (key_hash, sid, user_id, state, created_at, last_seen_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key_hash) DO NOTHING",
            )
            .bind(key_hash(&key))
            .bind(meta.as_ref().map(|m| m.sid.clone()))
            .bind(state::user_id_of(state))
            .bind(&json)
            .bind(now)
            .bind(now)
            .bind(now.saturating_add(ttl_secs(self.lifetimes.of(state, ttl))))
            .execute(&self.db.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(key);
            }
        }
    }

    /// Updates a live session whatever its version. A row deleted meanwhile (logout, revoke) is never re-created:
    /// a request racing a logout must not bring the session back.
    pub async fn update(&self, key: &str, state: &State, ttl: Duration) -> Result<(), sqlx::Error> {
        let json = serde_json::to_string(state).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let now = now_epoch();
        let meta = state::meta_of(state);
        sqlx::query(
            "UPDATE sessions SET state = $2, sid = $3, user_id = $4, last_seen_at = $5, \
             expires_at = $6, version = version + 1 WHERE key_hash = $1 AND expires_at > $7",
        )
        .bind(key_hash(key))
        .bind(&json)
        .bind(meta.as_ref().map(|m| m.sid.clone()))
        .bind(state::user_id_of(state))
        .bind(meta.map_or(now, |m| m.last_seen))
        .bind(now.saturating_add(ttl_secs(self.lifetimes.of(state, ttl))))
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Extends a live session's expiry.
    pub async fn update_ttl(&self, key: &str, ttl: Duration) -> Result<(), sqlx::Error> {
        let now = now_epoch();
        // An expired row that is not purged yet stays expired: no update brings it back.
        sqlx::query("UPDATE sessions SET expires_at = $2 WHERE key_hash = $1 AND expires_at > $3")
            .bind(key_hash(key))
            .bind(now.saturating_add(ttl_secs(ttl)))
            .bind(now)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Deletes every expired row, in batches found through the expiry index: a flood of guest
    /// rows expiring together never holds the write lock (SQLite) or bloats one transaction
    /// (PostgreSQL) for the whole purge. Run in the background.
    pub async fn delete_expired(&self) -> Result<u64, sqlx::Error> {
        const BATCH: u64 = 1000;
        let now = now_epoch();
        let mut deleted = 0;
        loop {
            let batch = sqlx::query(
                "DELETE FROM sessions WHERE key_hash IN \
                 (SELECT key_hash FROM sessions WHERE expires_at <= $1 LIMIT 1000)",
            )
            .bind(now)
            .execute(&self.db.pool)
            .await?
            .rows_affected();
            deleted += batch;
            if batch < BATCH {
                return Ok(deleted);
            }
        }
    }

    /// Live guest rows (sessions without a login).
    pub async fn guest_count(&self) -> Result<u64, sqlx::Error> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM sessions WHERE user_id IS NULL AND expires_at > $1",
        )
        .bind(now_epoch())
        .fetch_one(&self.db.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// The live sessions of a user, newest first. The device label is read from the state's
    /// login metadata, its one home, rather than kept twice.
    pub async fn sessions_of(&self, user_id: i64) -> Result<Vec<SessionSummary>, sqlx::Error> {
        let rows: Vec<(Option<String>, i64, i64, String)> = sqlx::query_as(
            "SELECT sid, created_at, last_seen_at, state FROM sessions \
             WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC",
        )
        .bind(user_id)
        .bind(now_epoch())
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(sid, created_at, last_seen_at, json)| {
                let device = serde_json::from_str::<State>(&json)
                    .ok()
                    .and_then(|state| state::meta_of(&state))
                    .map(|meta| meta.device)
                    .unwrap_or_default();
                Some(SessionSummary {
                    sid: sid?,
                    created_at,
                    last_seen_at,
                    device,
                })
            })
            .collect())
    }

    /// Deletes the session of `user_id` whose id is `sid`; whether there was one (another
    /// user's session never matches).
    pub async fn revoke(&self, user_id: i64, sid: &str) -> Result<bool, sqlx::Error> {
        let deleted = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND sid = $2")
            .bind(user_id)
            .bind(sid)
            .execute(&self.db.pool)
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    /// Deletes every session of a user except `keep_sid`'s.
    pub async fn revoke_others(&self, user_id: i64, keep_sid: &str) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND (sid IS NULL OR sid <> $2)")
                .bind(user_id)
                .bind(keep_sid)
                .execute(&self.db.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Whether the sessions table answers (one indexed lookup).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1 FROM sessions WHERE key_hash = ''")
            .fetch_optional(&self.db.pool)
            .await
            .is_ok()
    }
}
