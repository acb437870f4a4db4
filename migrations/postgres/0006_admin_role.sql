-- Admin is a property of an account, set by `statecart admin grant|revoke <username>`, never
-- a name in the config: a configured name that nobody had registered yet used to make
-- whoever registered it first an admin. 1 = admin, 0 = not (an integer on both dialects).
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
