//! The stateless half: public pages that cannot see a session, so any cache may serve them.
//!
//! Nothing here takes a `Session`, and the scope these handlers live in has no session
//! middleware: the structure itself guarantees they never set a cookie.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use askama::Template;
use serde::Serialize;

use super::{Nav, Site, errors::AppError, http};
use crate::{
    config::Settings,
    db::Db,
    domain::catalog::{self, Product, ProductId},
    session::{self, BackendFacts, Store},
};

/// A product as pages show it.
pub struct ProductView {
    /// Product id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Formatted unit price.
    pub price: String,
    /// Units left.
    pub stock: i64,
    /// A colour for the product's placeholder picture, stable per product.
    pub hue: i64,
}

impl ProductView {
    /// "12 in stock", "Only 3 left" or "Sold out".
    pub fn stock_label(&self) -> String {
        match self.stock {
            ..=0 => "Sold out".to_owned(),
            1..=5 => format!("Only {} left", self.stock),
            n => format!("{n} in stock"),
        }
    }

    /// The first letter, for the placeholder picture.
    pub fn initial(&self) -> char {
        self.name.chars().next().unwrap_or('?')
    }
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        Self {
            id: p.id,
            price: p.price().to_string(),
            hue: (p.id * 47) % 360,
            name: p.name,
            description: p.description,
            stock: p.stock,
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    site: &'a Site,
    nav: Nav,
    facts: BackendFacts,
    featured: Vec<ProductView>,
}

#[derive(Template)]
#[template(path = "about.html")]
struct AboutPage<'a> {
    site: &'a Site,
    nav: Nav,
    facts: BackendFacts,
    settings: &'a Settings,
}

#[derive(Template)]
#[template(path = "products.html")]
struct ProductsPage<'a> {
    site: &'a Site,
    nav: Nav,
    products: Vec<ProductView>,
}

#[derive(Template)]
#[template(path = "product.html")]
struct ProductPage<'a> {
    site: &'a Site,
    nav: Nav,
    product: ProductView,
}

/// Renders a template as a public, cacheable page.
fn public_page(req: &HttpRequest, page: &impl Template) -> Result<HttpResponse, AppError> {
    Ok(http::cacheable(
        req,
        header::ContentType::html(),
        page.render()?,
        &http::public_page_cache_control(),
    ))
}

/// `GET /`.
pub async fn home(
    req: HttpRequest,
    site: web::Data<Site>,
    db: web::Data<Db>,
) -> Result<HttpResponse, AppError> {
    let featured = catalog::list(&db)
        .await?
        .into_iter()
        .take(8)
        .map(Into::into)
        .collect();
    public_page(
        &req,
        &HomePage {
            site: &site,
            nav: Nav::stateless("home"),
            facts: session::facts(site.backend),
            featured,
        },
    )
}

/// `GET /about`: the three kinds of state, and what the running config chose.
pub async fn about(
    req: HttpRequest,
    site: web::Data<Site>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, AppError> {
    public_page(
        &req,
        &AboutPage {
            site: &site,
            nav: Nav::stateless("about"),
            facts: session::facts(site.backend),
            settings: &settings,
        },
    )
}

/// `GET /products`.
pub async fn products(
    req: HttpRequest,
    site: web::Data<Site>,
    db: web::Data<Db>,
) -> Result<HttpResponse, AppError> {
    let products = catalog::list(&db)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    public_page(
        &req,
        &ProductsPage {
            site: &site,
            nav: Nav::stateless("products"),
            products,
        },
    )
}

/// `GET /products/{id}`: malformed and unknown ids both get the 404 page.
pub async fn product(
    req: HttpRequest,
    site: web::Data<Site>,
    db: web::Data<Db>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = ProductId::parse(&id).ok_or(AppError::NotFound)?;
    let product = catalog::find(&db, id).await?.ok_or(AppError::NotFound)?;
    public_page(
        &req,
        &ProductPage {
            site: &site,
            nav: Nav::stateless("products"),
            product: product.into(),
        },
    )
}

#[derive(Serialize)]
struct ProductJson {
    id: i64,
    name: String,
    price_cents: i64,
    stock: i64,
}

/// `GET /products.json`: `[{id, name, price_cents, stock}]`.
pub async fn products_json(req: HttpRequest, db: web::Data<Db>) -> Result<HttpResponse, AppError> {
    let products: Vec<ProductJson> = catalog::list(&db)
        .await?
        .into_iter()
        .map(|p| ProductJson {
            id: p.id,
            name: p.name,
            price_cents: p.price_cents,
            stock: p.stock,
        })
        .collect();
    let body = serde_json::to_vec(&products).map_err(anyhow::Error::from)?;
    Ok(http::cacheable(
        &req,
        header::ContentType::json(),
        body,
        &http::public_page_cache_control(),
    ))
}

/// `GET /healthz`: 200 when the database and the session store answer, else 503 naming what
/// is down.
pub async fn healthz(db: web::Data<Db>, store: web::Data<Store>) -> HttpResponse {
    let (database, sessions) = futures_util::future::join(db.ping(), store.ping()).await;
    let word = |up: bool| if up { "ok" } else { "down" };
    let body = serde_json::json!({
        "status": if database && sessions { "ok" } else { "unavailable" },
        "database": word(database),
        "session_store": word(sessions),
    });
    let mut res = if database && sessions {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((
                header::RETRY_AFTER,
                super::errors::RETRY_AFTER_SECS.to_string(),
            ))
            .json(body)
    };
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}
