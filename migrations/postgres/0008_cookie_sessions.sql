-- "Where you are logged in" for the cookie backend with cookie_revocation = true: one row per
-- login, so /account can list a user's cookie sessions (with the device label read at login),
-- end one of them, and cap how many a user keeps. The cookie still carries the session; this
-- is only its listing. Ending one adds its sid to revoked_sessions and removes the row. Rows
-- go at the absolute timeout (expires_at) or once idle past the idle timeout. No IP address.
CREATE TABLE cookie_sessions (
    sid          TEXT PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX cookie_sessions_user ON cookie_sessions (user_id);
CREATE INDEX cookie_sessions_expiry ON cookie_sessions (expires_at);
