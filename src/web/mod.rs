//! HTTP handlers grouped by page family, plus what every page shares.

pub mod account;
pub mod admin;
pub mod auth;
pub mod body;
pub mod cart;
pub mod client;
pub mod errors;
pub mod guard;
pub mod http;
pub mod inspector;
pub mod live;
pub mod observe;
pub mod orders;
pub mod public;

use crate::{
    config::SessionBackend,
    session::state::{ChangeError, Flash, TypedSession},
};

/// Headers every response carries. The policy allows scripts, styles, images and connections
/// from this origin only; styles may also be inline (product colours are `style` attributes
/// and the compare report is one self-contained file), scripts never. No page may frame this
/// site, and other sites see only our origin as the referrer.
pub const SECURITY_HEADERS: [(&str, &str); 3] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
];

/// Facts about the running app that every page shows (app data, one per server).
#[derive(Debug, Clone)]
pub struct Site {
    /// Instance name for the footer and `X-Statecart-Instance`.
    pub instance: String,
    /// The configured session backend.
    pub backend: SessionBackend,
    /// Content hash that versions asset URLs, so assets may be cached forever.
    pub asset_version: &'static str,
}

impl Site {
    /// "stateful" or "stateless", for the footer.
    pub fn mode(&self) -> &'static str {
        if self.backend.is_stateful() {
            "stateful"
        } else {
            "stateless"
        }
    }
}

/// What the header knows about the visitor.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    /// False on stateless pages: they cannot see the session, so they do not pretend to.
    pub knows_visitor: bool,
    /// The logged-in user's name.
    pub user: Option<String>,
    /// Lines in the cart, where known.
    pub cart_lines: Option<usize>,
    /// Which top-level page this is (its header link is highlighted when it has one).
    pub active: Tab,
}

/// The pages of the site as the header knows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tab {
    /// A page of no tab (an error page).
    #[default]
    None,
    /// `/`.
    Home,
    /// `/products` and product pages.
    Products,
    /// `/cart`.
    Cart,
    /// `/session`.
    Session,
    /// `/about`.
    About,
    /// `/compare`.
    Compare,
    /// `/account`.
    Account,
    /// `/admin/products`.
    Admin,
    /// `/orders` and an order.
    Orders,
    /// `/login`.
    Login,
    /// `/register`.
    Register,
}

impl Nav {
    /// The header of a stateless page.
    pub fn stateless(active: Tab) -> Self {
        Self {
            active,
            ..Self::default()
        }
    }
}

impl Nav {
    /// The header of a page that read the session.
    pub fn of(session: &TypedSession, active: Tab) -> Self {
        let user = session.user().map(|u| u.name);
        Self {
            knows_visitor: true,
            // Guests have a cart too; a visitor with no session shows none.
            cart_lines: (user.is_some() || !session.is_empty()).then(|| session.cart().len()),
            user,
            active,
        }
    }
}

/// What every page shows around its content: the site's facts (footer, asset URLs), the
/// header and, on pages of the stateful half, the message left for this page.
#[derive(Debug, Clone)]
pub struct Chrome<'a> {
    /// This server's facts.
    pub site: &'a Site,
    /// The header.
    pub nav: Nav,
    /// A confirmation or a problem left by the previous request.
    pub flash: Option<Flash>,
}

impl<'a> Chrome<'a> {
    /// The chrome of a stateless page: it knows nothing of the visitor.
    pub fn public(site: &'a Site, tab: Tab) -> Self {
        Self {
            site,
            nav: Nav::stateless(tab),
            flash: None,
        }
    }

    /// The chrome of a page that read the session (the message, if any, stays for later).
    pub fn private(site: &'a Site, session: &TypedSession, tab: Tab) -> Self {
        Self {
            site,
            nav: Nav::of(session, tab),
            flash: None,
        }
    }

    /// Shows the message left for this page, taking it out of the session.
    pub async fn take_flash(
        mut self,
        session: &TypedSession,
    ) -> Result<Self, ChangeError<std::convert::Infallible>> {
        self.flash = session.take_flash().await?;
        Ok(self)
    }
}

/// Renders a page of the stateful half: never cached, never stored by the browser.
pub fn private_page(
    page: &impl askama::Template,
) -> Result<actix_web::HttpResponse, errors::AppError> {
    Ok(actix_web::HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::html())
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .body(page.render()?))
}

pub use crate::domain::{human_time, rfc3339};
