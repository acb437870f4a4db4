//! `/admin/products`: prices and stock, for accounts with the admin role only; a login older
//! than `admin_reauth_secs` confirms each change with the password.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::{
    Chrome, Site, client,
    errors::AppError,
    guard::{LoggedIn, LoginLimits},
    http::see_other,
};
use crate::web::Tab;
use crate::{
    config::Settings,
    db::Db,
    domain::{
        accounts,
        catalog::{self, CatalogError, Product, ProductId},
        now_epoch, secs,
        snapshot::Catalog,
    },
    session::state::Flash,
};

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage<'a> {
    chrome: Chrome<'a>,
    products: Vec<Product>,
    /// Whether each change must carry the password (the login is older than the window).
    needs_password: bool,
}

/// The role is read from the database on every request: a revoke takes effect at once.
async fn require_admin(me: &LoggedIn, db: &Db) -> Result<(), AppError> {
    if accounts::is_admin(db, me.user.id).await? {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "Only the shop's administrators can change prices and stock.".to_owned(),
        ))
    }
}

/// Whether this login is older than the window in which changes need no password.
fn login_is_old(me: &LoggedIn, settings: &Settings) -> bool {
    let window = secs(settings.admin_reauth_after);
    me.session
        .meta()
        .is_none_or(|meta| now_epoch().saturating_sub(meta.issued_at) >= window)
}

/// `GET /admin/products`.
pub async fn page(
    site: web::Data<Site>,
    db: web::Data<Db>,
    settings: web::Data<Settings>,
    me: LoggedIn,
) -> Result<HttpResponse, AppError> {
    require_admin(&me, &db).await?;
    super::private_page(&AdminPage {
        chrome: Chrome::private(&site, &me.session, Tab::Admin)
            .take_flash(&me.session)
            .await?,
        products: catalog::list(&db).await?,
        needs_password: login_is_old(&me, &settings),
    })
}

/// Checks the password sent with a change when the login is old: someone at an unattended,
/// logged-in browser cannot change prices. Failures count like failed logins, so the form
/// cannot be used to guess the password either.
async fn confirm_password(
    req: &HttpRequest,
    db: &Db,
    settings: &Settings,
    limits: &LoginLimits,
    me: &LoggedIn,
    password: Option<&str>,
) -> Result<(), AppError> {
    if !login_is_old(me, settings) {
        return Ok(());
    }
    let address = client::address(req, &settings.trusted_proxies);
    if let Some(retry_after_secs) = limits.throttled_for(&me.user.name, address).await {
        return Err(AppError::TooManyRequests {
            message: format!(
                "Too many wrong passwords. Please wait {retry_after_secs} seconds and try again."
            ),
            retry_after_secs,
        });
    }
    let confirmed = match password.filter(|p| !p.is_empty()) {
        Some(password) => accounts::authenticate(db, &me.user.name, password)
            .await?
            .is_some_and(|user| user.id == me.user.id),
        None => false,
    };
    if confirmed {
        return Ok(());
    }
    if password.is_some_and(|p| !p.is_empty()) {
        limits.record_failure(&me.user.name, address).await;
    }
    Err(AppError::Forbidden(
        "Please confirm this change with your password: price and stock changes ask for it \
         again a while after you log in. Nothing was changed."
            .to_owned(),
    ))
}

/// The product form: blank fields are left as they are.
#[derive(Deserialize)]
pub struct ProductForm {
    product_id: Option<String>,
    price_cents: Option<String>,
    stock: Option<String>,
    /// The password, when the login is older than `admin_reauth_secs`.
    password: Option<String>,
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
    req: HttpRequest,
    db: web::Data<Db>,
    snapshot: web::Data<Arc<Catalog>>,
    settings: web::Data<Settings>,
    limits: web::Data<LoginLimits>,
    me: LoggedIn,
    form: web::Form<ProductForm>,
) -> Result<HttpResponse, AppError> {
    require_admin(&me, &db).await?;
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
    confirm_password(&req, &db, &settings, &limits, &me, form.password.as_deref()).await?;
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
