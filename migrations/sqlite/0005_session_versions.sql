-- Every save of a session bumps its version, and a change is saved only onto the version it
-- was made from (UPDATE ... WHERE version = $n). Two requests of one session that change it at
-- once then cannot overwrite each other: the later one reloads and applies its change again.
ALTER TABLE sessions ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
