//! The catalog: products, prices as integer cents, and the one-time seed.

use std::fmt;

use sqlx::FromRow;

use crate::db::Db;

/// A product id as it arrives from a URL or a form: a positive integer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ProductId(i64);

impl ProductId {
    /// Parses a decimal id; anything else (empty, signs, letters, overflow) is `None`.
    pub fn parse(input: &str) -> Option<Self> {
        if input.is_empty() || input.len() > 18 || !input.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        input.parse::<i64>().ok().filter(|&n| n > 0).map(Self)
    }

    /// The raw id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An amount of money in integer cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(i64);

impl Money {
    /// Wraps an amount in cents.
    pub fn from_cents(cents: i64) -> Self {
        Self(cents)
    }

    /// The amount in cents.
    pub fn cents(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}${}.{:02}", group_thousands(abs / 100), abs % 100)
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One product of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Product {
    /// Primary key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// A sentence or two for the product page.
    pub description: String,
    /// Unit price in cents.
    pub price_cents: i64,
    /// Units available now.
    pub stock: i64,
}

impl Product {
    /// The unit price.
    pub fn price(&self) -> Money {
        Money::from_cents(self.price_cents)
    }

    /// Whether none are left.
    pub fn sold_out(&self) -> bool {
        self.stock <= 0
    }
}

/// Every product, by id.
pub async fn list(db: &Db) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, description, price_cents, stock FROM products ORDER BY id")
        .fetch_all(&db.pool)
        .await
}

/// One product's price and stock after a change, stamped with the catalog version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ProductChange {
    /// The product.
    pub product_id: i64,
    /// Unit price now, in cents.
    pub price_cents: i64,
    /// Units left now.
    pub stock: i64,
    /// Catalog version of this change.
    pub version: i64,
}

/// Why a catalog change was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No such product.
    #[error("there is no product {0}")]
    UnknownProduct(ProductId),
    /// The value is outside what the shop accepts.
    #[error("{0}")]
    Invalid(&'static str),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Highest price accepted, in cents ($1,000,000.00).
pub const MAX_PRICE_CENTS: i64 = 100_000_000;
/// Highest stock accepted.
pub const MAX_STOCK: i64 = 1_000_000;

/// Takes the next catalog version inside `tx` (the clock row stays locked until commit).
pub async fn next_version(tx: &mut sqlx::AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE catalog_clock SET version = version + 1 WHERE id = 1 RETURNING version",
    )
    .fetch_one(tx)
    .await
}

/// The latest catalog version.
pub async fn current_version(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM catalog_clock WHERE id = 1")
        .fetch_one(&db.pool)
        .await
}

/// Sets a product's price (0 to [`MAX_PRICE_CENTS`]).
pub async fn set_price(db: &Db, id: ProductId, cents: i64) -> Result<ProductChange, CatalogError> {
    update_product(db, id, Some(cents), None).await
}

/// Sets a product's stock (0 to [`MAX_STOCK`]).
pub async fn set_stock(db: &Db, id: ProductId, stock: i64) -> Result<ProductChange, CatalogError> {
    update_product(db, id, None, Some(stock)).await
}

/// Sets a product's price and/or stock in one transaction, stamped with the next catalog
/// version. Values are checked first; a refused change writes nothing.
pub async fn update_product(
    db: &Db,
    id: ProductId,
    price_cents: Option<i64>,
    stock: Option<i64>,
) -> Result<ProductChange, CatalogError> {
    if price_cents.is_some_and(|c| !(0..=MAX_PRICE_CENTS).contains(&c)) {
        return Err(CatalogError::Invalid(
            "A price is a whole number of cents from 0 to 100000000.",
        ));
    }
    if stock.is_some_and(|s| !(0..=MAX_STOCK).contains(&s)) {
        return Err(CatalogError::Invalid(
            "A stock is a whole number from 0 to 1000000.",
        ));
    }
    let mut tx = db.begin_write().await?;
    let version = next_version(&mut tx).await?;
    let changed: Option<ProductChange> = sqlx::query_as(
        "UPDATE products SET price_cents = COALESCE($1, price_cents), stock = COALESCE($2, stock), \
         version = $3 WHERE id = $4 RETURNING id AS product_id, price_cents, stock, version",
    )
    .bind(price_cents)
    .bind(stock)
    .bind(version)
    .bind(id.get())
    .fetch_optional(&mut *tx)
    .await?;
    match changed {
        Some(change) => {
            tx.commit().await?;
            Ok(change)
        }
        None => {
            tx.rollback().await?;
            Err(CatalogError::UnknownProduct(id))
        }
    }
}

/// Changes since `since` (exclusive), oldest first, optionally only for some products.
pub async fn changes_since(db: &Db, since: i64) -> Result<Vec<ProductChange>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id AS product_id, price_cents, stock, version FROM products \
         WHERE version > $1 ORDER BY version, id",
    )
    .bind(since)
    .fetch_all(&db.pool)
    .await
}

/// The products the shop opens with: (name, description, price in cents, stock).
const SEED: [(&str, &str, i64, i64); 14] = [
    (
        "Ceramic pour-over dripper",
        "A heavy stoneware cone that holds heat, for one or two cups. Takes size 02 filters.",
        2_850,
        24,
    ),
    (
        "Paper filters, size 02 (100)",
        "Oxygen-bleached paper filters that leave no taste behind.",
        650,
        50,
    ),
    (
        "Burr hand grinder",
        "Steel conical burrs with 30 click settings, from espresso to French press.",
        8_900,
        8,
    ),
    (
        "Gooseneck kettle, 0.9 l",
        "A slow, steady pour for pour-over brewing. Works on gas, electric and induction.",
        5_400,
        12,
    ),
    (
        "Single-origin beans, Ethiopia (250 g)",
        "Washed Yirgacheffe, roasted light: jasmine, bergamot and lemon.",
        1_450,
        40,
    ),
    (
        "House espresso blend (1 kg)",
        "Brazil and Colombia, roasted medium-dark for chocolate and hazelnut.",
        3_200,
        30,
    ),
    (
        "Digital scale with timer",
        "0.1 g resolution up to 2 kg, with a built-in shot timer.",
        3_900,
        15,
    ),
    (
        "Glass carafe, 600 ml",
        "Borosilicate glass server with a wooden collar.",
        2_400,
        18,
    ),
    (
        "Stoneware mug, speckled",
        "Hand-glazed 300 ml mug, dishwasher safe.",
        1_800,
        35,
    ),
    (
        "Loose-leaf sencha (100 g)",
        "Spring harvest green tea from Shizuoka, grassy and sweet.",
        1_250,
        22,
    ),
    (
        "Cast-iron teapot, 0.8 l",
        "Enamelled inside, with a removable steel infuser.",
        6_500,
        5,
    ),
    (
        "Cold brew bottle, 1 l",
        "Fine mesh filter; steep overnight, pour straight from the fridge.",
        2_950,
        3,
    ),
    (
        "Milk frothing pitcher, 350 ml",
        "Stainless steel with a sharp spout for latte art.",
        1_600,
        27,
    ),
    (
        "Descaling tablets (8)",
        "Citric-acid tablets that keep kettles and machines scale-free.",
        900,
        45,
    ),
];

/// Inserts the seed products once per database, on its first start; later starts do nothing.
///
/// Returns whether this call seeded. The marker row and the products commit together, so two
/// instances starting at once on one database seed exactly once.
pub async fn seed_if_new(db: &Db) -> Result<bool, sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO app_meta (key, value) VALUES ('catalog_seeded', '1') ON CONFLICT (key) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        for (name, description, price_cents, stock) in SEED {
            sqlx::query(
                "INSERT INTO products (name, description, price_cents, stock) VALUES ($1, $2, $3, $4)",
            )
            .bind(name)
            .bind(description)
            .bind(price_cents)
            .bind(stock)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_ids_are_positive_decimal_integers() {
        assert_eq!(ProductId::parse("12").map(ProductId::get), Some(12));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "abc",
            "1.5",
            "1 OR 1=1",
            "99999999999999999999",
        ] {
            assert_eq!(ProductId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn money_reads_as_dollars_and_cents() {
        assert_eq!(Money::from_cents(0).to_string(), "$0.00");
        assert_eq!(Money::from_cents(650).to_string(), "$6.50");
        assert_eq!(Money::from_cents(12_345_678).to_string(), "$123,456.78");
        assert_eq!(Money::from_cents(-5).to_string(), "-$0.05");
    }

    #[test]
    fn the_seed_is_believable() {
        assert!(SEED.len() >= 12);
        assert!(
            SEED.iter()
                .all(|&(_, _, price, stock)| price > 0 && (3..=50).contains(&stock))
        );
    }
}
