-- The least state that makes logout real on the cookie backend (cookie_revocation = true):
-- the ids of cookie sessions logged out before their absolute timeout, kept until then, and a
-- per-user epoch that "log out other sessions" advances (a cookie issued under an older epoch
-- is no session). Nothing else about a session is stored: its state stays in the cookie.
CREATE TABLE revoked_sessions (
    sid        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX revoked_sessions_expiry ON revoked_sessions (expires_at);
CREATE TABLE session_epochs (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    epoch   INTEGER NOT NULL
);
