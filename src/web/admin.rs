//! `/admin/products`: prices and stock, for the users named in `admin_users` only.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::{Nav, Site, errors::AppError, guard::LoggedIn, http::see_other};
use crate::{
    config::Settings,
    db::Db,
    domain::{
        catalog::{self, CatalogError, Product, ProductId},
        snapshot::Catalog,
    },
    session::state::Flash,
};

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage<'a> {
    site: &'a Site,
    nav: Nav,
    flash: Option<Flash>,
    products: Vec<Product>,
}

fn require_admin(me: &LoggedIn, settings: &Settings) -> Result<(), AppError> {
    if settings
        .admin_users
        .iter()
        .any(|name| name.eq_ignore_ascii_case(&me.user.name))
    {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "Only the shop's administrators can change prices and stock.".to_owned(),
        ))
    }
}

/// `GET /admin/products`.
pub async fn page(
    site: web::Data<Site>,
    db: web::Data<Db>,
    settings: web::Data<Settings>,
    me: LoggedIn,
) -> Result<HttpResponse, AppError> {
    require_admin(&me, &settings)?;
    super::private_page(&AdminPage {
        site: &site,
        nav: Nav::of(&me.session, "admin"),
        flash: me.session.take_flash().await?,
        products: catalog::list(&db).await?,
    })
}

/// The product form: blank fields are left as they are.
#[derive(Deserialize)]
pub struct ProductForm {
    product_id: Option<String>,
    price_cents: Option<String>,
    stock: Option<String>,
}

/// A whole number of 0 or more from a form field; blank means "no change".
fn amount(field: Option<&str>, what: &str) -> Result<Option<i64>, AppError> {
    match field.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| AppError::Unprocessable(format!("The {what} must be a whole number, 0 or more; got {text:?}. Nothing was changed."))),
    }
}

/// `POST /admin/products`: sets price and/or stock of one product in one transaction.
pub async fn update(
    db: web::Data<Db>,
    snapshot: web::Data<Arc<Catalog>>,
    settings: web::Data<Settings>,
    me: LoggedIn,
    form: web::Form<ProductForm>,
) -> Result<HttpResponse, AppError> {
    require_admin(&me, &settings)?;
    let id = form
        .product_id
        .as_deref()
        .and_then(|s| ProductId::parse(s.trim()))
        .ok_or_else(|| AppError::BadRequest("That is not a product number.".to_owned()))?;
    let price = amount(form.price_cents.as_deref(), "price in cents")?;
    let stock = amount(form.stock.as_deref(), "stock")?;
    if price.is_none() && stock.is_none() {
        return Err(AppError::Unprocessable(
            "Give a new price or stock. Nothing was changed.".to_owned(),
        ));
    }
    match catalog::update_product(&db, id, price, stock).await {
        Ok(change) => {
            // This instance's pages show the change at once; others within a poll.
            if let Err(err) = snapshot.refresh().await {
                tracing::warn!(error = %err, "could not refresh the catalog after a change");
            }
            me.session
                .set_flash(Flash::info(format!(
                    "Product #{} now costs {} with {} in stock (catalog version {}).",
                    change.product_id,
                    catalog::Money::from_cents(change.price_cents),
                    change.stock,
                    change.version
                )))
                .await?;
            Ok(see_other("/admin/products"))
        }
        Err(CatalogError::UnknownProduct(_)) => Err(AppError::NotFound),
        Err(CatalogError::Invalid(message)) => Err(AppError::Unprocessable(format!(
            "{message} Nothing was changed."
        ))),
        Err(CatalogError::Database(err)) => Err(err.into()),
    }
}
