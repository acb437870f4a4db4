//! Checkout and orders: one transaction that re-reads stock, decrements it, and writes the
//! order with the prices paid.

use sha2::{Digest as _, Sha256};

use super::{
    cart::Cart,
    catalog::{Money, ProductId},
    now_epoch,
};
use crate::db::Db;

/// An order id from a URL: a positive integer (parsed like a product id).
pub type OrderId = ProductId;

/// What a checkout did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkout {
    /// A new order.
    Placed(i64),
    /// The same checkout was submitted before; this is its order.
    AlreadyPlaced(i64),
}

impl Checkout {
    /// The order id either way.
    pub fn order_id(self) -> i64 {
        match self {
            Self::Placed(id) | Self::AlreadyPlaced(id) => id,
        }
    }
}

/// Why a checkout was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// Nothing to buy.
    #[error("Your cart is empty, so there is nothing to check out.")]
    EmptyCart,
    /// A line wants more than is left now.
    #[error(
        "Only {available} of {name} left, but your cart has {wanted}. Please lower the quantity and try again; nothing was ordered."
    )]
    OutOfStock {
        /// Product name.
        name: String,
        /// Units left now.
        available: i64,
        /// Units in the cart.
        wanted: u32,
    },
    /// A product in the cart is no longer sold.
    #[error(
        "A product in your cart (#{0}) is no longer sold. Please remove it and try again; nothing was ordered."
    )]
    UnknownProduct(ProductId),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The key that makes a repeated submission of one checkout find the first order: the
/// session and the cart revision the checkout form showed.
pub fn checkout_key(session_id: &str, cart_rev: u64) -> String {
    Sha256::digest(format!("{session_id}:{cart_rev}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Buys the cart: in one transaction, claims the checkout key, takes each line from stock only
/// if enough is left (so concurrent buyers never oversell), and writes the order.
pub async fn checkout(
    db: &Db,
    user_id: i64,
    cart: &Cart,
    key: &str,
) -> Result<Checkout, CheckoutError> {
    if cart.is_empty() {
        return Err(CheckoutError::EmptyCart);
    }
    let mut tx = db.begin_write().await?;
    let order_id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO orders (user_id, total_cents, created_at, checkout_key) VALUES ($1, 0, $2, $3) \
         ON CONFLICT (user_id, checkout_key) DO NOTHING RETURNING id",
    )
    .bind(user_id)
    .bind(now_epoch())
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(order_id) = order_id else {
        tx.rollback().await?;
        let existing: i64 =
            sqlx::query_scalar("SELECT id FROM orders WHERE user_id = $1 AND checkout_key = $2")
                .bind(user_id)
                .bind(key)
                .fetch_one(&db.pool)
                .await?;
        return Ok(Checkout::AlreadyPlaced(existing));
    };

    // Stock changes are catalog changes: live subscribers and pollers see them by version.
    let version = super::catalog::next_version(&mut tx).await?;
    // A fixed order of row locks keeps concurrent checkouts on PostgreSQL free of deadlocks.
    let mut lines: Vec<_> = cart.lines().collect();
    lines.sort_by_key(|l| l.product_id);
    let mut total = 0_i64;
    for line in lines {
        let wanted = i64::from(line.quantity.get());
        let taken: Option<(String, i64)> = sqlx::query_as(
            "UPDATE products SET stock = stock - $1, version = $3 \
             WHERE id = $2 AND stock >= $1 RETURNING name, price_cents",
        )
        .bind(wanted)
        .bind(line.product_id.get())
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((name, price_cents)) = taken else {
            let now: Option<(String, i64)> =
                sqlx::query_as("SELECT name, stock FROM products WHERE id = $1")
                    .bind(line.product_id.get())
                    .fetch_optional(&mut *tx)
                    .await?;
            tx.rollback().await?;
            return Err(match now {
                Some((name, available)) => CheckoutError::OutOfStock {
                    name,
                    available,
                    wanted: line.quantity.get(),
                },
                None => CheckoutError::UnknownProduct(line.product_id),
            });
        };
        total += price_cents * wanted;
        sqlx::query(
            "INSERT INTO order_lines (order_id, product_id, product_name, quantity, unit_price_cents) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(order_id)
        .bind(line.product_id.get())
        .bind(name)
        .bind(wanted)
        .bind(price_cents)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE orders SET total_cents = $1 WHERE id = $2")
        .bind(total)
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Checkout::Placed(order_id))
}

/// The order an earlier submission of this checkout created, if any.
pub async fn find_by_key(db: &Db, user_id: i64, key: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM orders WHERE user_id = $1 AND checkout_key = $2")
        .bind(user_id)
        .bind(key)
        .fetch_optional(&db.pool)
        .await
}

/// An order as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderSummary {
    /// Order id.
    pub id: i64,
    /// Total paid, in cents.
    pub total_cents: i64,
    /// When, epoch seconds.
    pub created_at: i64,
    /// Units bought.
    pub items: i64,
}

impl OrderSummary {
    /// The total paid.
    pub fn total(&self) -> Money {
        Money::from_cents(self.total_cents)
    }
}

/// One line of an order, at the price paid.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderLine {
    /// Product id.
    pub product_id: i64,
    /// Name at the time of the order.
    pub product_name: String,
    /// Units.
    pub quantity: i64,
    /// Unit price paid, in cents.
    pub unit_price_cents: i64,
}

impl OrderLine {
    /// Unit price paid.
    pub fn unit_price(&self) -> Money {
        Money::from_cents(self.unit_price_cents)
    }

    /// Line total.
    pub fn total(&self) -> Money {
        Money::from_cents(self.unit_price_cents * self.quantity)
    }
}

/// A user's orders, newest first.
pub async fn list_for_user(db: &Db, user_id: i64) -> Result<Vec<OrderSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, o.total_cents, o.created_at, CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) AS items \
         FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id \
         WHERE o.user_id = $1 GROUP BY o.id, o.total_cents, o.created_at ORDER BY o.id DESC",
    )
    .bind(user_id)
    .fetch_all(&db.pool)
    .await
}

/// One of the user's orders with its lines; another user's order is `None`, like a missing one.
pub async fn find_for_user(
    db: &Db,
    user_id: i64,
    order_id: OrderId,
) -> Result<Option<(OrderSummary, Vec<OrderLine>)>, sqlx::Error> {
    let order: Option<OrderSummary> = sqlx::query_as(
        "SELECT o.id, o.total_cents, o.created_at, CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) AS items \
         FROM orders o LEFT JOIN order_lines l ON l.order_id = o.id \
         WHERE o.id = $1 AND o.user_id = $2 GROUP BY o.id, o.total_cents, o.created_at",
    )
    .bind(order_id.get())
    .bind(user_id)
    .fetch_optional(&db.pool)
    .await?;
    let Some(order) = order else {
        return Ok(None);
    };
    let lines = sqlx::query_as(
        "SELECT product_id, product_name, quantity, unit_price_cents FROM order_lines \
         WHERE order_id = $1 ORDER BY product_name",
    )
    .bind(order.id)
    .fetch_all(&db.pool)
    .await?;
    Ok(Some((order, lines)))
}
