-- The shop's durable data. Money is integer cents; times are Unix epoch seconds so the same
-- queries read them on SQLite and PostgreSQL alike.

-- The catalog. `version` grows on every price or stock change, so other parts can ask
-- "what changed since N" with one indexed query.
CREATE TABLE products (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    stock       INTEGER NOT NULL CHECK (stock >= 0),
    version     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX products_version ON products (version);

-- Accounts. `username_key` is the lower-cased name: names are unique case-insensitively.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL,
    username_key  TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

-- Orders keep the unit price paid, so later price changes never rewrite history.
CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    total_cents INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, id);

CREATE TABLE order_lines (
    order_id         INTEGER NOT NULL REFERENCES orders (id),
    product_id       INTEGER NOT NULL REFERENCES products (id),
    product_name     TEXT    NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- One-time facts about this database, e.g. that the catalog seed already ran.
CREATE TABLE app_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
