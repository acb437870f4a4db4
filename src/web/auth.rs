//! Register, log in, log out.

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header},
    web,
};
use askama::Template;
use serde::Deserialize;

use super::{
    Chrome, Site, client,
    errors::AppError,
    guard::LoginLimits,
    http::{safe_next, see_other},
};
use crate::web::Tab;
use crate::{
    config::Settings,
    db::Db,
    domain::{
        accounts::{self, Password, RegisterError, Username},
        cart::CartMerge,
        now_epoch, secs,
    },
    metrics::{self, LoginOutcome},
    session::{
        Store,
        state::{Flash, SessionUser, TypedSession},
    },
};

/// The message for every failed login: unknown user and wrong password read the same.
pub const BAD_CREDENTIALS: &str = "That username and password do not match an account.";

/// The login page and the register page: one form, asked for in two ways.
#[derive(Template)]
#[template(path = "credentials.html")]
struct CredentialsPage<'a> {
    chrome: Chrome<'a>,
    error: Option<String>,
    username: String,
    next: String,
}

impl CredentialsPage<'_> {
    /// Whether this is the register page (its tab says so).
    fn registering(&self) -> bool {
        self.chrome.nav.active == Tab::Register
    }

    /// The form again, refused with `error` (422), keeping the name typed.
    fn refused(self) -> Result<HttpResponse, AppError> {
        let page = super::private_page(&self)?;
        Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY))
    }
}

/// Query of the login and register pages.
#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
    loggedout: Option<String>,
}

/// The login form (missing fields read as empty, so they get the form's message, not a 400).
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

fn with_status(mut res: HttpResponse, status: StatusCode) -> HttpResponse {
    *res.status_mut() = status;
    res
}

/// `GET /login`.
pub async fn login_form(
    site: web::Data<Site>,
    session: TypedSession,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, AppError> {
    let logged_out = query.loggedout.is_some();
    credentials_form(&site, &session, &query, Tab::Login, |next| {
        if logged_out {
            Some(Flash::info("You have logged out."))
        } else if next != "/" {
            // Sent here by a page that needs a login: say why.
            Some(Flash::info(
                "Please log in (or create an account) to continue; your cart lives in your \
                 session.",
            ))
        } else {
            None
        }
    })
    .await
}

/// `GET /register`.
pub async fn register_form(
    site: web::Data<Site>,
    session: TypedSession,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, AppError> {
    credentials_form(&site, &session, &query, Tab::Register, |_| None).await
}

/// The empty form of `tab`, or on to `next` for a visitor already logged in. The message left
/// for this page comes first; `otherwise` may say why the visitor is here.
async fn credentials_form(
    site: &Site,
    session: &TypedSession,
    query: &NextQuery,
    tab: Tab,
    otherwise: impl FnOnce(&str) -> Option<Flash>,
) -> Result<HttpResponse, AppError> {
    let next = safe_next(query.next.as_deref());
    if session.user().is_some() {
        return Ok(see_other(&next));
    }
    let mut chrome = Chrome::private(site, session, tab)
        .take_flash(session)
        .await?;
    if chrome.flash.is_none() {
        chrome.flash = otherwise(&next);
    }
    super::private_page(&CredentialsPage {
        chrome,
        error: None,
        username: String::new(),
        next,
    })
}

/// What the page says about a guest cart that came along into a login, if anything.
fn carried_cart_message(merge: CartMerge) -> Option<String> {
    let products = |n: usize| {
        if n == 1 {
            "1 product".to_owned()
        } else {
            format!("{n} products")
        }
    };
    let mut text = match merge.merged {
        0 => return None,
        n => format!("Your cart came with you ({}).", products(n)),
    };
    if merge.capped > 0 {
        text.push_str(&format!(
            " {} reached the 99 units a line can hold.",
            products(merge.capped)
        ));
    }
    if merge.dropped > 0 {
        text.push_str(&format!(
            " {} did not fit: a cart holds a limited number of products.",
            products(merge.dropped)
        ));
    }
    Some(text)
}

/// Logs `user` in on this session (starting in revocation `epoch`), then labels the session,
/// revokes the browser's previous cookie login (with `cookie_revocation`) and applies
/// `max_sessions_per_user`. Returns the guest cart that came along, if any.
async fn start_login(
    req: &HttpRequest,
    session: &TypedSession,
    user: accounts::User,
    epoch: i64,
    settings: &Settings,
) -> Result<Option<CartMerge>, AppError> {
    let replaced = session.meta();
    let user_id = user.id;
    let carried = session
        .log_in(
            SessionUser {
                id: user.id,
                name: user.username,
            },
            now_epoch(),
            epoch,
            settings.cart_max_lines,
        )
        .await?;
    super::account::after_login(req, session, user_id, replaced).await?;
    Ok(carried)
}

/// `POST /login`.
pub async fn login(
    req: HttpRequest,
    site: web::Data<Site>,
    db: web::Data<Db>,
    settings: web::Data<Settings>,
    limits: web::Data<LoginLimits>,
    session: TypedSession,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let next = safe_next(form.next.as_deref());
    let address = client::address(&req, &settings.trusted_proxies);
    if let Some(retry_after_secs) = limits.throttled_for(&form.username, address).await {
        metrics::login(LoginOutcome::Throttled);
        return Err(AppError::TooManyRequests {
            message: format!(
                "Too many failed logins for this account from your address. Please wait {retry_after_secs} seconds and try again."
            ),
            retry_after_secs,
        });
    }
    let answer = accounts::authenticate(&db, &form.username, &form.password).await;
    match metrics::counted_login(answer)? {
        Some(user) => {
            limits.clear_failures(&form.username, address).await;
            let epoch = session.login_epoch(user.id).await?;
            let carried = start_login(&req, &session, user, epoch, &settings).await?;
            if let Some(text) = carried.and_then(carried_cart_message) {
                session.set_flash(Flash::info(text)).await?;
            }
            Ok(see_other(&next))
        }
        None => {
            // A name no account can have never succeeds, so there is nothing to slow down;
            // counting it would only let a flood of made-up names push real counts out.
            if Username::parse(&form.username).is_ok() {
                limits.record_failure(&form.username, address).await;
            }
            CredentialsPage {
                chrome: Chrome::private(&site, &session, Tab::Login),
                error: Some(BAD_CREDENTIALS.to_owned()),
                username: form.username,
                next,
            }
            .refused()
        }
    }
}

/// `POST /register`: creates the account and logs it in.
pub async fn register(
    req: HttpRequest,
    site: web::Data<Site>,
    db: web::Data<Db>,
    settings: web::Data<Settings>,
    session: TypedSession,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let next = safe_next(form.next.as_deref());
    let refuse = |message: String| -> Result<HttpResponse, AppError> {
        CredentialsPage {
            chrome: Chrome::private(&site, &session, Tab::Register),
            error: Some(message),
            username: form.username.clone(),
            next: next.clone(),
        }
        .refused()
    };
    let username = match Username::parse(&form.username) {
        Ok(name) => name,
        Err(message) => return refuse(message.to_owned()),
    };
    let password = match Password::parse(&form.password) {
        Ok(password) => password,
        Err(message) => return refuse(message.to_owned()),
    };
    match accounts::register(&db, &username, password).await {
        Ok(user) => {
            let carried = start_login(&req, &session, user, 0, &settings).await?;
            let mut welcome = format!("Welcome, {username}! Your account is ready.");
            if let Some(text) = carried.and_then(carried_cart_message) {
                welcome = format!("{welcome} {text}");
            }
            session.set_flash(Flash::info(welcome)).await?;
            Ok(see_other(&next))
        }
        Err(RegisterError::Taken) => refuse(RegisterError::Taken.to_string()),
        Err(other) => Err(other.into()),
    }
}

/// `POST /logout`: the store forgets the session and the cookie is removed.
/// With `cookie_revocation`, the cookie's session id is refused from now until its absolute
/// timeout, so a copy of the cookie is worthless too.
pub async fn logout(
    session: TypedSession,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
) -> Result<HttpResponse, AppError> {
    if session.user().is_none() {
        return Ok(see_other("/"));
    }
    if let (Some(revocation), Some(meta)) = (store.revocation(), session.meta()) {
        let absolute = secs(settings.absolute_timeout);
        revocation
            .revoke(&meta.sid, meta.issued_at.saturating_add(absolute))
            .await?;
    }
    session.log_out();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login?loggedout=1"))
        .finish())
}
