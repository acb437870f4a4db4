//! `GET /session` and `GET /session.json`: what the server holds about you, and where.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use askama::Template;
use serde::Serialize;

use super::{Chrome, Site, errors::AppError, human_time, rfc3339};
use std::sync::Arc;

use crate::web::Tab;
use crate::{
    config::Settings,
    domain::secs,
    leases::LiveHub,
    session::{self, BackendFacts, Store, state::TypedSession},
};

/// One cart line as the inspector reports it.
#[derive(Debug, Serialize)]
pub struct CartLineReport {
    /// Product id.
    pub product_id: i64,
    /// Units.
    pub quantity: u32,
}

/// The inspector's facts, the same for the page and the JSON.
#[derive(Debug, Serialize)]
pub struct SessionReport {
    backend: &'static str,
    stateful: bool,
    state_location: &'static str,
    parallel_writes: &'static str,
    instance: String,
    user: Option<String>,
    cookie_bytes: usize,
    server_bytes: usize,
    idle_expires_at: Option<String>,
    absolute_expires_at: Option<String>,
    cart: Vec<CartLineReport>,
    cart_lines: usize,
    live_lease_expires_at: Option<String>,
    /// What the cookie backend with `cookie_revocation` keeps on the server (else null).
    revocation: Option<RevocationReport>,
}

/// The rows `cookie_revocation` keeps, and their bytes.
#[derive(Debug, Serialize)]
pub struct RevocationReport {
    /// Logged-out ids within their absolute timeout.
    pub revoked_ids: i64,
    /// Users with an epoch.
    pub user_epochs: i64,
    /// Logins listed for /account.
    pub listed_sessions: i64,
    /// About how many bytes those rows take.
    pub bytes: i64,
}

async fn revocation(store: &Store) -> Result<Option<RevocationReport>, AppError> {
    let Some(revocation) = store.revocation() else {
        return Ok(None);
    };
    let footprint = revocation.footprint().await?;
    Ok(Some(RevocationReport {
        revoked_ids: footprint.revoked_ids,
        user_epochs: footprint.user_epochs,
        listed_sessions: footprint.listed_sessions,
        bytes: footprint.bytes(),
    }))
}

fn report(
    req: &HttpRequest,
    session: &TypedSession,
    store: &Store,
    settings: &Settings,
    hub: &LiveHub,
    revocation: Option<RevocationReport>,
) -> Inspection {
    let entries = session.entries();
    let cart: Vec<CartLineReport> = session
        .cart()
        .lines()
        .map(|l| CartLineReport {
            product_id: l.product_id.get(),
            quantity: l.quantity.get(),
        })
        .collect();
    let ends = Ends::of(session, settings, hub);
    let report = SessionReport {
        backend: settings.session_backend.as_str(),
        stateful: settings.session_backend.is_stateful(),
        state_location: session::facts_as_configured(
            settings.session_backend,
            settings.cookie_revocation,
        )
        .location,
        parallel_writes: session::facts(settings.session_backend).parallel_writes,
        revocation,
        instance: settings.instance.clone(),
        user: session.user().map(|u| u.name),
        cookie_bytes: cookie_bytes(req, settings.cookie_name()),
        server_bytes: store.stored_bytes(&entries),
        idle_expires_at: ends.idle.and_then(rfc3339),
        absolute_expires_at: ends.absolute.and_then(rfc3339),
        cart_lines: cart.len(),
        cart,
        live_lease_expires_at: ends.live_lease.and_then(rfc3339),
    };
    Inspection {
        report,
        ends,
        entries,
    }
}

/// What one look at the session found: the report, and what the page shows beside it.
struct Inspection {
    report: SessionReport,
    ends: Ends,
    entries: Vec<(String, String)>,
}

/// When this login ends by each rule, and when its live-update lease does (epoch seconds).
struct Ends {
    idle: Option<i64>,
    absolute: Option<i64>,
    live_lease: Option<i64>,
}

impl Ends {
    fn of(session: &TypedSession, settings: &Settings, hub: &LiveHub) -> Self {
        let meta = session.meta();
        Self {
            idle: meta
                .as_ref()
                .map(|m| m.last_seen.saturating_add(secs(settings.idle_timeout))),
            absolute: meta
                .as_ref()
                .map(|m| m.issued_at.saturating_add(secs(settings.absolute_timeout))),
            live_lease: meta.as_ref().and_then(|m| hub.lease_of(&m.sid)),
        }
    }
}

/// Bytes of the session cookie as the browser sends it (`name=value`, still encoded).
fn cookie_bytes(req: &HttpRequest, name: &str) -> usize {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .find(|c| {
            c.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('='))
        })
        .map_or(0, str::len)
}

#[derive(Template)]
#[template(path = "session.html")]
struct InspectorPage<'a> {
    chrome: Chrome<'a>,
    report: SessionReport,
    facts: BackendFacts,
    entries: Vec<(String, String)>,
    idle_expires: Option<String>,
    absolute_expires: Option<String>,
    live_lease: Option<String>,
    settings: &'a Settings,
}

/// `GET /session`.
pub async fn page(
    req: HttpRequest,
    site: web::Data<Site>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    hub: web::Data<Arc<LiveHub>>,
    session: TypedSession,
) -> Result<HttpResponse, AppError> {
    let revocation = revocation(&store).await?;
    let Inspection {
        report,
        ends,
        entries,
    } = report(&req, &session, &store, &settings, &hub, revocation);
    super::private_page(&InspectorPage {
        live_lease: ends.live_lease.map(human_time),
        chrome: Chrome::private(&site, &session, Tab::Session),
        facts: session::facts_as_configured(settings.session_backend, settings.cookie_revocation),
        entries,
        idle_expires: ends.idle.map(human_time),
        absolute_expires: ends.absolute.map(human_time),
        report,
        settings: &settings,
    })
}

/// `GET /session.json`.
pub async fn json(
    req: HttpRequest,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    hub: web::Data<Arc<LiveHub>>,
    session: TypedSession,
) -> Result<HttpResponse, AppError> {
    let revocation = revocation(&store).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(report(&req, &session, &store, &settings, &hub, revocation).report))
}
