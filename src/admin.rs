//! `statecart admin ...`: change the catalog from the command line, with the same config as
//! `serve`. Every change takes the next catalog version, so running shops see it.

use crate::{
    Settings,
    db::Db,
    domain::{
        accounts::{self, Username},
        catalog::{self, CatalogError, Money, ProductId},
    },
};

/// What an admin command can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The unit price, in cents.
    Price,
    /// The units in stock.
    Stock,
}

/// Why an admin command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The input was refused; nothing was changed.
    #[error("{0}; nothing was changed")]
    Refused(String),
    /// The database failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Sets a product's price or stock from command-line text; returns what it did.
pub async fn set(
    settings: &Settings,
    field: Field,
    product: &str,
    value: &str,
) -> Result<String, AdminError> {
    let id = ProductId::parse(product.trim())
        .ok_or_else(|| AdminError::Refused(format!("{product:?} is not a product number")))?;
    let (what, limit) = match field {
        Field::Price => ("price in cents", catalog::MAX_PRICE_CENTS),
        Field::Stock => ("stock", catalog::MAX_STOCK),
    };
    let amount = value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| (0..=limit).contains(n))
        .ok_or_else(|| {
            AdminError::Refused(format!(
                "the {what} must be a whole number from 0 to {limit}, not {value:?}"
            ))
        })?;
    let db = Db::open(&settings.database_url).await?;
    db.migrate().await?;
    let (price, stock) = match field {
        Field::Price => (Some(amount), None),
        Field::Stock => (None, Some(amount)),
    };
    let result = catalog::update_product(&db, id, price, stock).await;
    db.close().await;
    match result {
        Ok(change) => Ok(format!(
            "product {} now costs {} with {} in stock (catalog version {})",
            change.product_id,
            Money::from_cents(change.price_cents),
            change.stock,
            change.version
        )),
        Err(CatalogError::UnknownProduct(id)) => {
            Err(AdminError::Refused(format!("there is no product {id}")))
        }
        Err(CatalogError::Invalid(message)) => Err(AdminError::Refused(message.to_owned())),
        Err(CatalogError::Database(err)) => Err(AdminError::Failed(err.into())),
    }
}

/// Grants (`admin = true`) or revokes the admin role of an existing account.
pub async fn set_role(
    settings: &Settings,
    username: &str,
    admin: bool,
) -> Result<String, AdminError> {
    let name = Username::parse(username)
        .map_err(|_| AdminError::Refused(format!("{username:?} is not a username")))?;
    let db = Db::open(&settings.database_url).await?;
    db.migrate().await?;
    let result = accounts::set_admin(&db, &name, admin).await;
    db.close().await;
    match result.map_err(anyhow::Error::from)? {
        Some(name) if admin => Ok(format!("{name} is an admin now")),
        Some(name) => Ok(format!("{name} is no longer an admin")),
        None => Err(AdminError::Refused(format!(
            "there is no account {username:?}; it must register first"
        ))),
    }
}

/// Grants the admin role to the accounts named in `admin_users` that exist now; a name
/// nobody has registered grants nothing, so registering it later makes no one an admin.
/// Returns the names that had no account.
pub async fn bootstrap(db: &Db, names: &[String]) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    for name in names {
        let granted = match Username::parse(name) {
            Ok(name) => accounts::set_admin(db, &name, true).await?.is_some(),
            Err(_) => false,
        };
        if !granted {
            missing.push(name.clone());
        }
    }
    Ok(missing)
}
