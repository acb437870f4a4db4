//! `cookie_revocation`: what the cookie backend needs on the server to make logout real.
//!
//! A cookie carries its whole session, so the server cannot forget it; it can only refuse it.
//! Two small tables do that: the ids of sessions logged out before their absolute timeout
//! (kept until then, then purged) and one epoch per user that "log out other sessions"
//! advances. Every request with a login asks both, in one indexed query on the app database,
//! so the answer holds across every instance that shares it, with no cache to go stale.
//!
//! For "where you are logged in", a third table lists the logins themselves (id, user, device
//! label, times): the cookie cannot be asked where else its user is logged in, so the server
//! keeps that list when it keeps revocation anyway. Ending one of them is revoking its id.

use std::time::Duration;

use super::SessionSummary;
use crate::{
    db::Db,
    domain::{now_epoch, secs},
};

/// The revocation state, on the app database.
#[derive(Clone)]
pub struct Revocation {
    db: Db,
    /// `idle_timeout_secs`: a listed login idle this long has ended by its own clock.
    idle: Duration,
}

/// What the server keeps for revocation right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationFootprint {
    /// Logged-out session ids not yet past their absolute timeout.
    pub revoked_ids: i64,
    /// Users with an epoch.
    pub user_epochs: i64,
    /// Logins listed for /account ("where you are logged in").
    pub listed_sessions: i64,
}

/// Approximate bytes of one listed login: its 24-character id, a device label of about 20
/// bytes and four 8-byte integers.
const LISTED_SESSION_BYTES: i64 = 24 + 20 + 4 * 8;

impl RevocationFootprint {
    /// Approximate bytes of those rows (a revoked id: 24 characters and an 8-byte expiry; an
    /// epoch: two 8-byte integers).
    pub fn bytes(&self) -> i64 {
        self.revoked_ids * (24 + 8)
            + self.user_epochs * (8 + 8)
            + self.listed_sessions * LISTED_SESSION_BYTES
    }
}

impl Revocation {
    /// Revocation on the app database, for sessions that end after `idle` without activity.
    pub fn new(db: Db, idle: Duration) -> Self {
        Self { db, idle }
    }

    /// The earliest last activity of a login that has not ended by the idle timeout.
    fn idle_cutoff(&self, now: i64) -> i64 {
        now.saturating_sub(secs(self.idle))
    }

    /// Lists a new login of `user_id` until its absolute timeout `until` (epoch seconds).
    pub async fn record_login(
        &self,
        sid: &str,
        user_id: i64,
        device: &str,
        until: i64,
    ) -> Result<(), sqlx::Error> {
        let now = now_epoch();
        sqlx::query(
            "INSERT INTO cookie_sessions (sid, user_id, device, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (sid) DO NOTHING",
        )
        .bind(sid)
        .bind(user_id)
        .bind(device)
        .bind(now)
        .bind(until)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Records activity of a listed login; called only when the cookie's own last-seen time is
    /// rewritten (at most once a touch interval), never moving it backwards.
    pub async fn touch(&self, sid: &str, now: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE cookie_sessions SET last_seen_at = $2 WHERE sid = $1 AND last_seen_at < $2",
        )
        .bind(sid)
        .bind(now)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// The listed logins of `user_id` that have not ended (revoked, idle or past their
    /// absolute timeout).
    pub async fn sessions_of(&self, user_id: i64) -> Result<Vec<SessionSummary>, sqlx::Error> {
        let now = now_epoch();
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT c.sid, c.device, c.created_at, c.last_seen_at FROM cookie_sessions c \
             WHERE c.user_id = $1 AND c.expires_at > $2 AND c.last_seen_at > $3 \
             AND NOT EXISTS (SELECT 1 FROM revoked_sessions r WHERE r.sid = c.sid) \
             ORDER BY c.created_at DESC",
        )
        .bind(user_id)
        .bind(now)
        .bind(self.idle_cutoff(now))
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(sid, device, created_at, last_seen_at)| SessionSummary {
                sid,
                created_at,
                last_seen_at,
                device,
            })
            .collect())
    }

    /// Ends the listed login `sid` of `user_id`: its id is refused from now until its absolute
    /// timeout. Whether there was such a login (another user's never matches). The id is
    /// refused before the row goes, so no crash in between leaves a live session unlisted.
    pub async fn revoke_listed(&self, user_id: i64, sid: &str) -> Result<bool, sqlx::Error> {
        let now = now_epoch();
        let refused = sqlx::query(
            "INSERT INTO revoked_sessions (sid, expires_at) \
             SELECT sid, expires_at FROM cookie_sessions \
             WHERE user_id = $1 AND sid = $2 AND expires_at > $3 AND last_seen_at > $4 \
             ON CONFLICT (sid) DO NOTHING",
        )
        .bind(user_id)
        .bind(sid)
        .bind(now)
        .bind(self.idle_cutoff(now))
        .execute(&self.db.pool)
        .await?
        .rows_affected();
        self.forget(sid).await?;
        Ok(refused > 0)
    }

    /// Removes the listing of every login of `user_id` but `keep_sid` (after "log out
    /// everywhere else" moved the epoch past them).
    pub async fn forget_others(&self, user_id: i64, keep_sid: &str) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM cookie_sessions WHERE user_id = $1 AND sid <> $2")
                .bind(user_id)
                .bind(keep_sid)
                .execute(&self.db.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn forget(&self, sid: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM cookie_sessions WHERE sid = $1")
            .bind(sid)
            .execute(&self.db.pool)
            .await?;
        Ok(())
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

    /// Refuses the session `sid` from now until `until` (its absolute timeout, epoch seconds),
    /// and lists it no more.
    pub async fn revoke(&self, sid: &str, until: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO revoked_sessions (sid, expires_at) VALUES ($1, $2) \
             ON CONFLICT (sid) DO NOTHING",
        )
        .bind(sid)
        .bind(until)
        .execute(&self.db.pool)
        .await?;
        self.forget(sid).await
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

    /// Forgets revoked ids past their absolute timeout (their cookies have expired anyway),
    /// and the listing of logins that ended by a timeout.
    pub async fn purge_expired(&self) -> Result<u64, sqlx::Error> {
        let now = now_epoch();
        sqlx::query("DELETE FROM cookie_sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
            .bind(now)
            .bind(self.idle_cutoff(now))
            .execute(&self.db.pool)
            .await?;
        Ok(
            sqlx::query("DELETE FROM revoked_sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(&self.db.pool)
                .await?
                .rows_affected(),
        )
    }

    /// What the tables hold now.
    pub async fn footprint(&self) -> Result<RevocationFootprint, sqlx::Error> {
        let (revoked_ids, user_epochs, listed_sessions): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM revoked_sessions WHERE expires_at > $1), \
             (SELECT COUNT(*) FROM session_epochs), \
             (SELECT COUNT(*) FROM cookie_sessions WHERE expires_at > $1)",
        )
        .bind(now_epoch())
        .fetch_one(&self.db.pool)
        .await?;
        Ok(RevocationFootprint {
            revoked_ids,
            user_epochs,
            listed_sessions,
        })
    }
}
