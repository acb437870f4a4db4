//! `cookie_revocation`: what the cookie backend needs on the server to make logout real.
//!
//! A cookie carries its whole session, so the server cannot forget it; it can only refuse it.
//! Two small tables do that: the ids of sessions logged out before their absolute timeout
//! (kept until then, then purged) and one epoch per user that "log out other sessions"
//! advances. Every request with a login asks both, in one indexed query on the app database,
//! so the answer holds across every instance that shares it, with no cache to go stale.

use crate::{db::Db, domain::now_epoch};

/// The revocation state, on the app database.
#[derive(Clone)]
pub struct Revocation {
    db: Db,
}

/// What the server keeps for revocation right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationFootprint {
    /// Logged-out session ids not yet past their absolute timeout.
    pub revoked_ids: i64,
    /// Users with an epoch.
    pub user_epochs: i64,
}

impl RevocationFootprint {
    /// Approximate bytes of those rows (a 24-character id and two 8-byte integers each).
    pub fn bytes(&self) -> i64 {
        self.revoked_ids * (24 + 8) + self.user_epochs * (8 + 8)
    }
}

impl Revocation {
    /// Revocation on the app database.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Whether the session `sid` of `user_id`, issued under `epoch`, was ended on the server.
    pub async fn is_revoked(
        &self,
        sid: &str,
        user_id: i64,
        epoch: i64,
    ) -> Result<bool, sqlx::Error> {
        let (revoked, current): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM revoked_sessions WHERE sid = $1), \
             COALESCE((SELECT epoch FROM session_epochs WHERE user_id = $2), 0)",
        )
        .bind(sid)
        .bind(user_id)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(revoked > 0 || epoch < current)
    }

    /// The epoch a new login of `user_id` starts in.
    pub async fn epoch_of(&self, user_id: i64) -> Result<i64, sqlx::Error> {
        let epoch: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM session_epochs WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(epoch.unwrap_or_default())
    }

    /// Refuses the session `sid` from now until `until` (its absolute timeout, epoch seconds).
    pub async fn revoke(&self, sid: &str, until: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO revoked_sessions (sid, expires_at) VALUES ($1, $2) \
             ON CONFLICT (sid) DO NOTHING",
        )
        .bind(sid)
        .bind(until)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Ends every session of `user_id` issued so far; returns the new epoch, which the session
    /// asking for it adopts to stay logged in.
    pub async fn advance_epoch(&self, user_id: i64) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO session_epochs (user_id, epoch) VALUES ($1, 1) \
             ON CONFLICT (user_id) DO UPDATE SET epoch = session_epochs.epoch + 1 \
             RETURNING epoch",
        )
        .bind(user_id)
        .fetch_one(&self.db.pool)
        .await
    }

    /// Forgets revoked ids past their absolute timeout (their cookies have expired anyway).
    pub async fn purge_expired(&self) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM revoked_sessions WHERE expires_at <= $1")
                .bind(now_epoch())
                .execute(&self.db.pool)
                .await?
                .rows_affected(),
        )
    }

    /// What the tables hold now.
    pub async fn footprint(&self) -> Result<RevocationFootprint, sqlx::Error> {
        let (revoked_ids, user_epochs): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM revoked_sessions WHERE expires_at > $1), \
             (SELECT COUNT(*) FROM session_epochs)",
        )
        .bind(now_epoch())
        .fetch_one(&self.db.pool)
        .await?;
        Ok(RevocationFootprint {
            revoked_ids,
            user_epochs,
        })
    }
}
