//! `GET /orders` and `GET /orders/{id}`: durable rows on every backend, visible to their owner only.

use actix_web::{HttpResponse, web};
use askama::Template;

use super::{Chrome, Site, errors::AppError, guard::LoggedIn, human_time};
use crate::web::Tab;
use crate::{
    db::Db,
    domain::orders::{self, OrderId, OrderLine, OrderSummary},
};

#[derive(Template)]
#[template(path = "orders.html")]
struct OrdersPage<'a> {
    chrome: Chrome<'a>,
    orders: Vec<(OrderSummary, String)>,
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage<'a> {
    chrome: Chrome<'a>,
    order: OrderSummary,
    placed: String,
    lines: Vec<OrderLine>,
}

/// `GET /orders`: newest first.
pub async fn list(
    site: web::Data<Site>,
    db: web::Data<Db>,
    me: LoggedIn,
) -> Result<HttpResponse, AppError> {
    let orders = orders::list_for_user(&db, me.user.id)
        .await?
        .into_iter()
        .map(|o| {
            let placed = human_time(o.created_at);
            (o, placed)
        })
        .collect();
    super::private_page(&OrdersPage {
        chrome: Chrome::private(&site, &me.session, Tab::Orders)
            .take_flash(&me.session)
            .await?,
        orders,
    })
}

/// `GET /orders/{id}`: another user's order is a 404, exactly like a missing one.
pub async fn show(
    site: web::Data<Site>,
    db: web::Data<Db>,
    me: LoggedIn,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = OrderId::parse(&id).ok_or(AppError::NotFound)?;
    let (order, lines) = orders::find_for_user(&db, me.user.id, id)
        .await?
        .ok_or(AppError::NotFound)?;
    super::private_page(&OrderPage {
        chrome: Chrome::private(&site, &me.session, Tab::Orders)
            .take_flash(&me.session)
            .await?,
        placed: human_time(order.created_at),
        order,
        lines,
    })
}
