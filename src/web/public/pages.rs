//! The stateless half: public pages that cannot see a session, so any cache may serve them.
//!
//! Nothing here takes a `Session`, and the scope these handlers live in has no session
//! middleware: the structure itself guarantees they never set a cookie. Pages come from the
//! in-memory catalog snapshot and are rendered once per catalog version: a request is a
//! lookup, an `If-None-Match` compare and bytes out.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, http::header, web};
use askama::Template;
use serde::Serialize;

use crate::web::Tab;
use crate::web::{Chrome, Site, errors::AppError, http};
use crate::{
    config::Settings,
    domain::{
        catalog::{Product, ProductId},
        snapshot::{Catalog, Snapshot},
    },
    session::{self, BackendFacts},
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

impl From<&Product> for ProductView {
    fn from(p: &Product) -> Self {
        Self {
            id: p.id,
            price: p.price().to_string(),
            hue: (p.id * 47) % 360,
            name: p.name.clone(),
            description: p.description.clone(),
            stock: p.stock,
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    chrome: Chrome<'a>,
    facts: BackendFacts,
    featured: Vec<ProductView>,
}

#[derive(Template)]
#[template(path = "about.html")]
struct AboutPage<'a> {
    chrome: Chrome<'a>,
    facts: BackendFacts,
    settings: &'a Settings,
}

#[derive(Template)]
#[template(path = "products.html")]
struct ProductsPage<'a> {
    chrome: Chrome<'a>,
    products: Vec<ProductView>,
}

#[derive(Template)]
#[template(path = "product.html")]
struct ProductPage<'a> {
    chrome: Chrome<'a>,
    product: ProductView,
}

/// A public page or JSON rendered once per catalog version, with its strong ETag.
#[derive(Clone)]
pub struct Rendered {
    body: web::Bytes,
    etag: header::HeaderValue,
    content_type: header::HeaderValue,
}

impl Rendered {
    fn new(body: Vec<u8>, content_type: &'static str) -> Result<Self, AppError> {
        let etag = header::HeaderValue::from_str(&http::etag_of(&body))
            .map_err(|e| AppError::Internal(e.into()))?;
        Ok(Self {
            body: body.into(),
            etag,
            content_type: header::HeaderValue::from_static(content_type),
        })
    }

    /// 200 with the body, or 304 when the client already holds it: a lookup and bytes out.
    fn respond(&self, req: &HttpRequest) -> HttpResponse {
        http::with_etag(
            req,
            self.etag.clone(),
            self.content_type.clone(),
            self.body.clone(),
            http::PUBLIC_CACHE_CONTROL,
        )
    }
}
const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// The public pages there are: each rendered at most once per catalog version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Page {
    Home,
    About,
    Products,
    ProductsJson,
    Product(i64),
}

/// Rendered public pages of one catalog version; a newer version starts afresh. Bounded by the
/// number of pages there are (one per product, plus four).
#[derive(Default)]
pub struct PublicPages {
    cache: Mutex<(i64, HashMap<Page, Rendered>)>,
}

impl PublicPages {
    /// The page at `version`, rendered now if this version has not rendered it yet.
    fn get(
        &self,
        version: i64,
        page: Page,
        render: impl FnOnce() -> Result<Rendered, AppError>,
    ) -> Result<Rendered, AppError> {
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.0 == version
                && let Some(hit) = cache.1.get(&page)
            {
                return Ok(hit.clone());
            }
        }
        let rendered = render()?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.0 != version {
            // Only move forward: a request still holding an older snapshot renders for itself.
            if version < cache.0 {
                return Ok(rendered);
            }
            *cache = (version, HashMap::new());
        }
        cache.1.insert(page, rendered.clone());
        Ok(rendered)
    }
}

/// What every public page handler reads: the request (for `If-None-Match`), the site's facts,
/// the catalog and the render cache. An extractor, so a handler names only its page.
pub struct Public {
    req: HttpRequest,
    site: web::Data<Site>,
    catalog: web::Data<Arc<Catalog>>,
    pages: web::Data<PublicPages>,
}

impl FromRequest for Public {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let public = (|| {
            Some(Self {
                req: req.clone(),
                site: req.app_data::<web::Data<Site>>()?.clone(),
                catalog: req.app_data::<web::Data<Arc<Catalog>>>()?.clone(),
                pages: req.app_data::<web::Data<PublicPages>>()?.clone(),
            })
        })();
        ready(public.ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!("the public pages' app data is missing"))
        }))
    }
}

impl Public {
    /// Answers with `page` of the current catalog version, rendered by `render` from the
    /// snapshot if this version has not rendered it yet.
    fn serve(
        &self,
        page: Page,
        render: impl FnOnce(&Snapshot, &Site) -> Result<Rendered, AppError>,
    ) -> Result<HttpResponse, AppError> {
        let snapshot = self.catalog.now();
        let rendered = self
            .pages
            .get(snapshot.version, page, || render(&snapshot, &self.site))?;
        Ok(rendered.respond(&self.req))
    }
}

fn html(page: &impl Template) -> Result<Rendered, AppError> {
    Rendered::new(page.render()?.into_bytes(), HTML)
}

/// `GET /`.
pub async fn home(public: Public) -> Result<HttpResponse, AppError> {
    public.serve(Page::Home, |snapshot, site| {
        html(&HomePage {
            chrome: Chrome::public(site, Tab::Home),
            facts: session::facts(site.backend),
            featured: snapshot.products.iter().take(8).map(Into::into).collect(),
        })
    })
}

/// `GET /about`: the three kinds of state, and what the running config chose.
pub async fn about(
    public: Public,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, AppError> {
    public.serve(Page::About, |_, site| {
        html(&AboutPage {
            chrome: Chrome::public(site, Tab::About),
            facts: session::facts_as_configured(site.backend, settings.cookie_revocation),
            settings: &settings,
        })
    })
}

/// `GET /products`.
pub async fn products(public: Public) -> Result<HttpResponse, AppError> {
    public.serve(Page::Products, |snapshot, site| {
        html(&ProductsPage {
            chrome: Chrome::public(site, Tab::Products),
            products: snapshot.products.iter().map(Into::into).collect(),
        })
    })
}

/// `GET /products/{id}`: malformed and unknown ids both get the 404 page.
pub async fn product(public: Public, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = ProductId::parse(&id).ok_or(AppError::NotFound)?;
    // The snapshot alone: an unknown or made-up number costs no database query (a product
    // added since arrives with the catalog version that added it).
    if public.catalog.now().get(id).is_none() {
        return Err(AppError::NotFound);
    }
    public.serve(Page::Product(id.get()), |snapshot, site| {
        html(&ProductPage {
            chrome: Chrome::public(site, Tab::Products),
            product: snapshot.get(id).ok_or(AppError::NotFound)?.into(),
        })
    })
}

#[derive(Serialize)]
struct ProductJson<'a> {
    id: i64,
    name: &'a str,
    price_cents: i64,
    stock: i64,
}

/// `GET /products.json`: `[{id, name, price_cents, stock}]`.
pub async fn products_json(public: Public) -> Result<HttpResponse, AppError> {
    public.serve(Page::ProductsJson, |snapshot, _| {
        let products: Vec<ProductJson<'_>> = snapshot
            .products
            .iter()
            .map(|p| ProductJson {
                id: p.id,
                name: &p.name,
                price_cents: p.price_cents,
                stock: p.stock,
            })
            .collect();
        let body = serde_json::to_vec(&products).map_err(anyhow::Error::from)?;
        Rendered::new(body, JSON)
    })
}
