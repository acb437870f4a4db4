-- Server-side sessions for the `database` backend. The row is found by a SHA-256 of the session
-- key, so a leaked table cannot be replayed as cookies. `sid` is a random id kept inside the
-- state too, so a handler can tell "this session" apart when listing or revoking.
CREATE TABLE sessions (
    key_hash     TEXT    PRIMARY KEY,
    sid          TEXT,
    user_id      INTEGER REFERENCES users (id) ON DELETE CASCADE,
    state        TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
-- The background purge deletes by expiry.
CREATE INDEX sessions_expiry ON sessions (expires_at);
