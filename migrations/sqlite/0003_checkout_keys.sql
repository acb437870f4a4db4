-- A checkout submitted twice (a double click, a retried POST) must create one order. Each
-- checkout carries a key derived from the session and the cart's revision; the second insert
-- of the same key finds the first order instead of creating another.
ALTER TABLE orders ADD COLUMN checkout_key TEXT;
CREATE UNIQUE INDEX orders_checkout_key ON orders (user_id, checkout_key);
