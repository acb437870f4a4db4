//! The `database` backend: one row per session in the app database (SQLite or PostgreSQL).

use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::{
    SessionSummary,
    state::{self, State},
};
use crate::{db::Db, domain::now_epoch};

/// Sessions as rows, found by a SHA-256 of the key (the key itself is never stored).
#[derive(Clone)]
pub struct SqlStore {
    db: Db,
}

/// Hex SHA-256 of a session key.
fn key_hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2)
}

impl SqlStore {
    /// A store on the app database's pool.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The state of a session that exists and has not expired.
    pub async fn load(&self, key: &str) -> Result<Option<State>, sqlx::Error> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT state FROM sessions WHERE key_hash = $1 AND expires_at > $2")
                .bind(key_hash(key))
                .bind(now_epoch())
                .fetch_optional(&self.db.pool)
                .await?;
        // Undecodable state is treated as no session rather than an error.
        Ok(row.and_then(|(json,)| serde_json::from_str(&json).ok()))
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
            .bind(now.saturating_add(ttl_secs(ttl)))
            .execute(&self.db.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(key);
            }
        }
    }

    /// Updates a live session. A row deleted meanwhile (logout, revoke) is never re-created:
    /// a request racing a logout must not bring the session back.
    pub async fn update(&self, key: &str, state: &State, ttl: Duration) -> Result<(), sqlx::Error> {
        let json = serde_json::to_string(state).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let now = now_epoch();
        let meta = state::meta_of(state);
        sqlx::query(
            "UPDATE sessions SET state = $2, sid = $3, user_id = $4, last_seen_at = $5, expires_at = $6 \
             WHERE key_hash = $1",
        )
        .bind(key_hash(key))
        .bind(&json)
        .bind(meta.as_ref().map(|m| m.sid.clone()))
        .bind(state::user_id_of(state))
        .bind(meta.map_or(now, |m| m.last_seen))
        .bind(now.saturating_add(ttl_secs(ttl)))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Extends a live session's expiry.
    pub async fn update_ttl(&self, key: &str, ttl: Duration) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sessions SET expires_at = $2 WHERE key_hash = $1")
            .bind(key_hash(key))
            .bind(now_epoch().saturating_add(ttl_secs(ttl)))
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Deletes a session.
    pub async fn delete(&self, key: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM sessions WHERE key_hash = $1")
            .bind(key_hash(key))
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Deletes every expired row; run in the background.
    pub async fn delete_expired(&self) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_epoch())
            .execute(&self.db.pool)
            .await?
            .rows_affected())
    }

    /// The live sessions of a user, newest first.
    pub async fn sessions_of(&self, user_id: i64) -> Result<Vec<SessionSummary>, sqlx::Error> {
        let rows: Vec<(Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT sid, created_at, last_seen_at FROM sessions \
             WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC",
        )
        .bind(user_id)
        .bind(now_epoch())
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(sid, created_at, last_seen_at)| {
                Some(SessionSummary {
                    sid: sid?,
                    created_at,
                    last_seen_at,
                })
            })
            .collect())
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
