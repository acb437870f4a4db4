//! The cart (state in the session, wherever the backend keeps it) and checkout.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::{Chrome, Site, errors::AppError, guard::referer_path, http::see_other};
use crate::web::Tab;
use crate::{
    config::Settings,
    db::Db,
    domain::{
        cart::{Cart, Quantity, QuantityError},
        catalog::{Money, Product, ProductId},
        orders,
        snapshot::{Catalog, Snapshot},
    },
    session::state::{Flash, TypedSession},
};

/// A cart line as the page shows it.
pub struct LineView {
    /// Product id.
    pub product_id: i64,
    /// Product name.
    pub name: String,
    /// Unit price now.
    pub unit_price: String,
    /// Unit price now, in cents (for live updates).
    pub price_cents: i64,
    /// Units in the cart.
    pub quantity: u32,
    /// Units left now.
    pub stock: i64,
    /// Line total.
    pub total: String,
}

impl LineView {
    /// Whether the cart wants more than is left.
    pub fn short(&self) -> bool {
        i64::from(self.quantity) > self.stock
    }

    /// "Sold out", "Only N left" (when short or 5 or fewer remain), or nothing. The live
    /// script in static/live.js applies the same rule to pushed changes.
    pub fn stock_note(&self) -> Option<String> {
        match self.stock {
            ..=0 => Some("Sold out".to_owned()),
            n if self.short() || n <= 5 => Some(format!("Only {n} left")),
            _ => None,
        }
    }
}

#[derive(Template)]
#[template(path = "cart.html")]
struct CartPage<'a> {
    chrome: Chrome<'a>,
    lines: Vec<LineView>,
    missing: usize,
    total: String,
    max_lines: usize,
    /// Cart revision, sent back by the checkout form.
    rev: u64,
    /// A guest's cart: no live updates (they need a login), checkout asks to log in.
    guest: bool,
    /// A guest cart's idle timeout, in minutes.
    guest_idle_minutes: u64,
    /// Catalog version the page shows; live updates and polling continue from it.
    version: i64,
    poll_secs: u64,
}

/// The cart's lines joined with the catalog snapshot; lines whose product is gone are counted
/// apart.
fn priced_lines(snapshot: &Snapshot, cart: &Cart) -> (Vec<LineView>, usize, Money) {
    let mut views = Vec::with_capacity(cart.len());
    let mut total = 0_i64;
    for line in cart.lines() {
        let Some(p) = snapshot.get(line.product_id) else {
            continue;
        };
        let line_total = p.price_cents * i64::from(line.quantity.get());
        total += line_total;
        views.push(LineView {
            product_id: p.id,
            name: p.name.clone(),
            unit_price: p.price().to_string(),
            price_cents: p.price_cents,
            quantity: line.quantity.get(),
            stock: p.stock,
            total: Money::from_cents(line_total).to_string(),
        });
    }
    let missing = cart.len() - views.len();
    (views, missing, Money::from_cents(total))
}

/// `GET /cart`.
pub async fn page(
    site: web::Data<Site>,
    catalog: web::Data<Arc<Catalog>>,
    settings: web::Data<Settings>,
    session: TypedSession,
) -> Result<HttpResponse, AppError> {
    let cart = session.cart();
    // The snapshot's version was read before its products: a change committed in between is
    // newer than the page, and the live stream or the next poll brings it.
    let snapshot = catalog.now();
    let version = snapshot.version;
    let (lines, missing, total) = priced_lines(&snapshot, &cart);
    super::private_page(&CartPage {
        chrome: Chrome::private(&site, &session, Tab::Cart)
            .take_flash(&session)
            .await?,
        guest: session.user().is_none(),
        guest_idle_minutes: settings.guest_idle_timeout.as_secs().div_ceil(60),
        lines,
        missing,
        total: total.to_string(),
        max_lines: settings.cart_max_lines,
        rev: cart.rev(),
        version,
        poll_secs: settings.poll_interval.as_secs(),
    })
}

/// The fields of the cart forms, as sent; each is checked by hand so every mistake gets its
/// own clear answer.
#[derive(Deserialize)]
pub struct LineForm {
    product_id: Option<String>,
    quantity: Option<String>,
}

/// A product id from a form: missing or malformed is 400, unknown is 404. Price and stock
/// come from the catalog snapshot (checkout re-checks stock in the database).
async fn product_from_form(
    catalog: &Catalog,
    field: Option<&str>,
) -> Result<(ProductId, Product), AppError> {
    let raw = field
        .ok_or_else(|| AppError::BadRequest("The form did not say which product.".to_owned()))?;
    let id = ProductId::parse(raw.trim())
        .ok_or_else(|| AppError::BadRequest("That is not a product number.".to_owned()))?;
    // The snapshot alone: a made-up number costs no database query.
    let product = catalog.now().get(id).cloned().ok_or(AppError::NotFound)?;
    Ok((id, product))
}

fn quantity_error(err: QuantityError) -> AppError {
    match err {
        QuantityError::NotANumber => AppError::BadRequest(err.to_string()),
        QuantityError::OutOfRange => AppError::Unprocessable(err.to_string()),
    }
}

fn over_stock(product: &Product, in_cart: u32) -> AppError {
    let left = match product.stock {
        0 => "is sold out".to_owned(),
        n => format!("has only {n} left"),
    };
    let have = if in_cart > 0 {
        format!(" (your cart already holds {in_cart})")
    } else {
        String::new()
    };
    AppError::Conflict(format!(
        "{} {left}{have}. Your cart is unchanged.",
        product.name
    ))
}

/// Where to go after a cart change: back to a stateful page that can show the message, else
/// the cart (a stateless product page cannot show it).
fn back_to(req: &HttpRequest) -> String {
    match referer_path(req) {
        Some(path) if path == "/cart" || path.starts_with("/cart?") => path,
        _ => "/cart".to_owned(),
    }
}

/// `POST /cart/add`. The change is decided on the cart as the session holds it when saved
/// (see `TypedSession::change`), so parallel adds never undo each other.
pub async fn add(
    req: HttpRequest,
    catalog: web::Data<Arc<Catalog>>,
    settings: web::Data<Settings>,
    session: TypedSession,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, AppError> {
    let (id, product) = product_from_form(&catalog, form.product_id.as_deref()).await?;
    let quantity =
        Quantity::parse(form.quantity.as_deref().unwrap_or("1")).map_err(quantity_error)?;
    let message = format!("Added {} × {} to your cart.", quantity.get(), product.name);
    session
        .change(|s| {
            let mut cart = s.cart();
            let in_cart = cart.quantity_of(id);
            if i64::from(in_cart + quantity.get()) > product.stock {
                return Err(over_stock(&product, in_cart));
            }
            cart.add(id, quantity, settings.cart_max_lines)
                .map_err(|e| AppError::Unprocessable(e.to_string()))?;
            s.set_cart(&cart);
            s.set_flash(Flash::info(message.as_str()));
            Ok(())
        })
        .await?;
    Ok(see_other(&back_to(&req)))
}

/// `POST /cart/update`: a new quantity for a line; 0 removes it.
pub async fn update(
    req: HttpRequest,
    catalog: web::Data<Arc<Catalog>>,
    session: TypedSession,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, AppError> {
    let (id, product) = product_from_form(&catalog, form.product_id.as_deref()).await?;
    let raw = form
        .quantity
        .as_deref()
        .ok_or_else(|| AppError::BadRequest("The form did not say how many.".to_owned()))?;
    let quantity = Quantity::parse_or_zero(raw).map_err(quantity_error)?;
    let message = match quantity {
        Some(q) => format!("{} now × {}.", product.name, q.get()),
        None => format!("Removed {} from your cart.", product.name),
    };
    session
        .change(|s| {
            let mut cart = s.cart();
            if let Some(q) = quantity
                && i64::from(q.get()) > product.stock
                && q.get() > cart.quantity_of(id)
            {
                return Err(over_stock(&product, cart.quantity_of(id)));
            }
            cart.set(id, quantity).map_err(|_| {
                AppError::Unprocessable(format!(
                    "{} is not in your cart, so there is nothing to change.",
                    product.name
                ))
            })?;
            s.set_cart(&cart);
            s.set_flash(Flash::info(message.as_str()));
            Ok::<_, AppError>(())
        })
        .await?;
    Ok(see_other(&back_to(&req)))
}

/// `POST /cart/clear`.
pub async fn clear(session: TypedSession) -> Result<HttpResponse, AppError> {
    session
        .change(|s| {
            let mut cart = s.cart();
            if cart.is_empty() {
                // Nothing to clear: a visitor without a cart gets no session for it.
                return Ok(());
            }
            cart.clear();
            s.set_cart(&cart);
            s.set_flash(Flash::info("Your cart is empty now."));
            Ok::<_, AppError>(())
        })
        .await?;
    Ok(see_other("/cart"))
}

/// The checkout form: the cart revision the page showed.
#[derive(Deserialize)]
pub struct CheckoutForm {
    rev: Option<String>,
}

/// `POST /checkout`: one transaction; 303 to the order, or 409 with the cart unchanged.
///
/// The form carries the cart revision it showed. The order is keyed by session and revision,
/// so the same form submitted twice (a double click, racing or not) lands on one order.
pub async fn checkout(
    db: web::Data<Db>,
    catalog: web::Data<Arc<Catalog>>,
    session: TypedSession,
    req: HttpRequest,
    form: Result<web::Form<CheckoutForm>, actix_web::Error>,
) -> Result<HttpResponse, AppError> {
    let form = match form {
        Ok(form) => Some(form),
        // A client may post no body at all: then the cart as it is now is checked out.
        Err(_) if has_no_body(&req) => None,
        // Any other body that is not one readable form (too large, JSON, text, a field twice)
        // orders nothing: its status says why (413, 415, 400).
        Err(err) => return Err(unreadable(&err)),
    };
    // Orders belong to accounts: a guest logs in (or registers) first, and the cart comes along.
    let Some(user) = session.user() else {
        return Err(AppError::LoginRequired {
            next: "/cart".to_owned(),
        });
    };
    let cart = session.cart();
    let rev = match form.as_ref().and_then(|f| f.rev.as_deref()).map(str::trim) {
        None | Some("") => cart.rev(),
        Some(text) => text.parse::<u64>().map_err(|_| {
            AppError::BadRequest("The checkout form is damaged; please reload the cart.".to_owned())
        })?,
    };
    let session_id = session.meta().map(|m| m.sid).unwrap_or_default();
    let key = orders::checkout_key(&session_id, rev);
    if let Some(order_id) = orders::find_by_key(&db, user.id, &key).await? {
        return Ok(see_other(&format!("/orders/{order_id}")));
    }
    if rev != cart.rev() {
        return Err(AppError::Conflict(
            "Your cart changed after this page was shown, so nothing was ordered. Please check \
             the cart and check out again."
                .to_owned(),
        ));
    }
    let done = orders::checkout(&db, user.id, &cart, &key).await?;
    // This instance's own change shows at once; others see it within a poll.
    if let Err(err) = catalog.refresh().await {
        tracing::warn!(error = %err, "could not refresh the catalog after a checkout");
    }
    let message = format!("Thank you! Order #{} is placed.", done.order_id());
    // Take out what was ordered; a line added while the order was placed stays.
    session
        .change(|s| {
            let mut now = s.cart();
            now.take_ordered(&cart);
            s.set_cart(&now);
            s.set_flash(Flash::info(message.as_str()));
            Ok::<_, AppError>(())
        })
        .await?;
    Ok(see_other(&format!("/orders/{}", done.order_id())))
}

/// Whether a request came without a body: no content type and no length (or zero).
fn has_no_body(req: &HttpRequest) -> bool {
    let headers = req.headers();
    let length = headers
        .get(actix_web::http::header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()));
    !headers.contains_key(actix_web::http::header::CONTENT_TYPE)
        && !headers.contains_key(actix_web::http::header::TRANSFER_ENCODING)
        && matches!(length, None | Some(Some(0)))
}

/// An unreadable form as the error its status names, with a message a person understands.
fn unreadable(err: &actix_web::Error) -> AppError {
    let status = err.as_response_error().status_code();
    tracing::info!(%status, error = %err, "refused an unreadable checkout form");
    let message = "The checkout form could not be read, so nothing was ordered. Please go \
                   back to the cart and check out from there."
        .to_owned();
    match status.as_u16() {
        408 => AppError::RequestTimeout,
        413 => AppError::PayloadTooLarge(message),
        415 => AppError::UnsupportedMediaType(message),
        _ => AppError::BadRequest(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(quantity: u32, stock: i64) -> LineView {
        LineView {
            product_id: 1,
            name: "x".to_owned(),
            unit_price: "$1.00".to_owned(),
            price_cents: 100,
            quantity,
            stock,
            total: "$1.00".to_owned(),
        }
    }

    #[test]
    fn the_stock_note_speaks_when_stock_is_short_or_low() {
        assert_eq!(line(1, 0).stock_note().as_deref(), Some("Sold out"));
        assert_eq!(line(3, 2).stock_note().as_deref(), Some("Only 2 left"));
        assert_eq!(line(1, 5).stock_note().as_deref(), Some("Only 5 left"));
        assert_eq!(line(7, 6).stock_note().as_deref(), Some("Only 6 left"));
        assert_eq!(line(2, 6).stock_note(), None);
    }
}
