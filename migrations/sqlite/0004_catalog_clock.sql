-- One clock for the whole catalog. Every price or stock change (checkout included) takes the
-- next value inside its own transaction and stamps it on the products it changed, so
-- "what changed since version N" is one indexed query (products.version > N), and since the
-- clock row is locked until commit, no change can later appear below a version already read.
CREATE TABLE catalog_clock (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO catalog_clock (id, version) VALUES (1, 0);
