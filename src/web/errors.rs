//! One error type for every handler, and the middleware that turns any error status into a page.

use std::convert::Infallible;

use actix_web::{
    HttpResponse, ResponseError,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{StatusCode, header},
    middleware::Next,
    web,
};
use askama::Template;

use super::{Chrome, Site, Tab};
use crate::{
    domain::{
        accounts::{AuthError, Busy, RegisterError},
        orders::CheckoutError,
    },
    session::{MAX_COOKIE_BYTES, guests::GuestRefusal, state::ChangeError},
};

/// Everything a handler can fail with; the status decides the page, the cause is only logged.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 404: the page or thing does not exist (or is not yours).
    #[error("not found")]
    NotFound,
    /// 303 to the login page, which sends the person back to `next` afterwards.
    #[error("login required")]
    LoginRequired {
        /// The local path to return to.
        next: String,
    },
    /// 408: the request body did not arrive in time.
    #[error("The request took too long to arrive. Nothing was changed.")]
    RequestTimeout,
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 413: the body is larger than the page accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not of a type the page reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 403: the request is not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 409: the request conflicts with the current state (e.g. stock ran out).
    #[error("{0}")]
    Conflict(String),
    /// 422: well-formed but unacceptable input.
    #[error("{0}")]
    Unprocessable(String),
    /// 429: slow down.
    #[error("{message}")]
    TooManyRequests {
        /// What the person is told.
        message: String,
        /// Seconds until a retry may succeed.
        retry_after_secs: u64,
    },
    /// 503: other requests of the same session kept changing it first; nothing was changed.
    #[error(
        "Too many changes to your session arrived at the same moment. Nothing was changed by this one; please try again."
    )]
    Busy,
    /// 503: the store holds as many guest sessions as `max_guest_sessions` allows.
    #[error(
        "This shop is holding as many guest carts as it can right now, so a new one could not be started. Nothing was changed. Log in (or create an account) to shop now, or try again in a minute."
    )]
    GuestsFull,
    /// 503: a store this request needs does not answer.
    #[error("{what} is unavailable")]
    Unavailable {
        /// What is down, in plain words.
        what: &'static str,
    },
    /// 500: a bug or an unexpected failure; logged with its cause chain.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Seconds a client is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 5;
/// Seconds a new guest is asked to wait when the store holds all the guests it may.
pub const GUESTS_FULL_RETRY_SECS: u64 = 60;

/// The human message an error page shows, attached to error responses.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::error!(error = %err, "database unavailable");
                Self::Unavailable {
                    what: "The database",
                }
            }
            other => Self::Internal(anyhow::Error::new(other).context("database query failed")),
        }
    }
}

/// Every password-hashing slot stayed busy: 503 with `Retry-After`, nothing changed.
impl From<Busy> for AppError {
    fn from(_: Busy) -> Self {
        tracing::warn!("every password-hashing slot is busy");
        Self::Unavailable {
            what: "Password checking",
        }
    }
}

impl From<AuthError> for AppError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Busy(busy) => busy.into(),
            AuthError::Database(err) => err.into(),
            AuthError::Hashing(err) => Self::Internal(err),
        }
    }
}

/// A taken name is a conflict here; the register form shows it on the form instead.
impl From<RegisterError> for AppError {
    fn from(err: RegisterError) -> Self {
        match err {
            RegisterError::Taken => Self::Conflict(err.to_string()),
            RegisterError::Failed(err) => err.into(),
        }
    }
}

/// A refused checkout orders nothing: an empty cart is unprocessable, a cart the stock can no
/// longer serve is a conflict to resolve in the cart.
impl From<CheckoutError> for AppError {
    fn from(err: CheckoutError) -> Self {
        match err {
            CheckoutError::EmptyCart => Self::Unprocessable(err.to_string()),
            CheckoutError::Database(err) => err.into(),
            refused => Self::Conflict(refused.to_string()),
        }
    }
}

impl From<crate::session::StoreError> for AppError {
    fn from(err: crate::session::StoreError) -> Self {
        tracing::error!(error = %err, "session store unavailable");
        Self::Unavailable {
            what: "The session store",
        }
    }
}

impl<E: Into<AppError>> From<ChangeError<E>> for AppError {
    fn from(err: ChangeError<E>) -> Self {
        match err {
            ChangeError::Refused(refused) => refused.into(),
            ChangeError::TooLarge { max_lines } => Self::Unprocessable(format!(
                "That change would make your session cookie larger than the {MAX_COOKIE_BYTES} \
                 bytes browsers keep. This server stores your cart in an encrypted cookie (the \
                 cookie backend), so the cart has to stay small: at most {max_lines} different \
                 products, and fewer when product numbers are long. Your cart is unchanged."
            )),
            // Logged out (or revoked, or expired) while this request ran: the session is gone.
            ChangeError::Ended => Self::LoginRequired {
                next: "/".to_owned(),
            },
            ChangeError::Busy => Self::Busy,
            ChangeError::Moved => Self::Conflict(
                "You logged in while this change was on its way, so it was not saved: your \
                 session moved to a new one as you logged in. Nothing was changed by this \
                 request; please try again."
                    .to_owned(),
            ),
            ChangeError::GuestRefused(GuestRefusal::TooManyFromAddress { retry_after_secs }) => {
                Self::TooManyRequests {
                    message: format!(
                        "Too many new carts were started from your network address in the \
                         last minute. Please wait {retry_after_secs} seconds and try again. \
                         If you have an account, you can log in and shop right away."
                    ),
                    retry_after_secs,
                }
            }
            ChangeError::GuestRefused(GuestRefusal::StoreFull) => Self::GuestsFull,
            ChangeError::Store(err) => err.into(),
        }
    }
}

impl From<Infallible> for AppError {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

impl From<askama::Error> for AppError {
    fn from(err: askama::Error) -> Self {
        Self::Internal(anyhow::Error::new(err).context("rendering a template"))
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::LoginRequired { .. } => StatusCode::SEE_OTHER,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } | Self::Busy | Self::GuestsFull => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::LoginRequired { next } = self {
            return super::http::see_other(&super::http::login_url(next));
        }
        let message = match self {
            Self::NotFound => default_message(StatusCode::NOT_FOUND).to_owned(),
            Self::Internal(cause) => {
                tracing::error!(error = ?cause, "request failed");
                default_message(StatusCode::INTERNAL_SERVER_ERROR).to_owned()
            }
            Self::Unavailable { what } => {
                format!(
                    "{what} is not answering right now. Nothing was changed; please try again in a few seconds."
                )
            }
            other => other.to_string(),
        };
        let mut res = HttpResponse::build(self.status_code());
        match self {
            Self::TooManyRequests {
                retry_after_secs, ..
            } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            Self::Unavailable { .. } => {
                res.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            Self::GuestsFull => {
                res.insert_header((header::RETRY_AFTER, GUESTS_FULL_RETRY_SECS.to_string()));
            }
            Self::Busy => {
                res.insert_header((header::RETRY_AFTER, "1"));
            }
            // The rest of the body may still trickle in: never read it, end the connection.
            Self::RequestTimeout => {
                res.force_close();
            }
            _ => {}
        }
        let mut res = res.finish();
        res.extensions_mut().insert(ErrorMessage(message));
        res
    }
}

/// What a person reads for a status when the handler said nothing more specific.
pub fn default_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "That request could not be understood. Please check the form and try again.",
        403 => "That is not allowed.",
        404 => "There is nothing here. The page may have moved, or the address has a typo.",
        405 => "That page does not accept this kind of request.",
        408 => "The request took too long to arrive. Nothing was changed.",
        409 => "That conflicts with the shop's current state. Nothing was changed.",
        413 => "That request was too large. Nothing was changed.",
        415 => "That request had a content type this page does not accept.",
        422 => "That input was not accepted. Nothing was changed.",
        429 => "Too many requests. Please wait a little and try again.",
        503 => {
            "The shop is briefly unavailable. Nothing was changed; please try again in a few seconds."
        }
        _ if status.is_server_error() => {
            "Something went wrong on our side. It has been logged; nothing was changed."
        }
        _ => "That request could not be completed.",
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome<'a>,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// Gives every 4xx/5xx a page in the site's layout (or JSON for JSON endpoints), keeping the
/// status and headers such as `Retry-After`. Responses that already carry a page are left alone.
pub async fn render_error_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // The request cannot be cloned before routing, so keep what the page needs: a handle on
    // the shared site facts (one Arc clone per request, no copy of the facts themselves).
    let site = req
        .app_data::<web::Data<Site>>()
        .map(|s| s.clone().into_inner());
    let wants_json = req.path().ends_with(".json") || req.path().starts_with("/cart/changes");
    match next.call(req).await {
        Ok(res) => {
            let res = res.map_into_boxed_body();
            if !needs_page(res.response()) {
                return Ok(res);
            }
            let (req, old) = res.into_parts();
            Ok(ServiceResponse::new(
                req,
                error_page(old, site.as_deref(), wants_json),
            ))
        }
        // A middleware failed (e.g. the session store): the error carries its own response.
        Err(err) => {
            let mut page = error_page(err.error_response(), site.as_deref(), wants_json);
            if let Some(site) = &site
                && let Ok(value) = header::HeaderValue::from_str(&site.instance)
            {
                page.headers_mut().insert(
                    header::HeaderName::from_static("x-statecart-instance"),
                    value,
                );
            }
            // This response skips the default headers of the app: give it the same.
            for (name, value) in super::SECURITY_HEADERS {
                page.headers_mut().insert(
                    header::HeaderName::from_static(name),
                    header::HeaderValue::from_static(value),
                );
            }
            Err(actix_web::error::InternalError::from_response(err.to_string(), page).into())
        }
    }
}

fn needs_page(res: &HttpResponse) -> bool {
    let status = res.status();
    let has_body = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html") || ct.starts_with("application/json"));
    (status.is_client_error() || status.is_server_error()) && !has_body
}

/// Replaces a bare error response by a page (or JSON), keeping its status and headers.
fn error_page(old: HttpResponse, site: Option<&Site>, wants_json: bool) -> HttpResponse {
    if !needs_page(&old) {
        return old;
    }
    let status = old.status();
    let message = old
        .extensions()
        .get::<ErrorMessage>()
        .map(|m| m.0.clone())
        .unwrap_or_else(|| default_message(status).to_owned());
    let mut new = HttpResponse::build(status);
    new.insert_header((header::CACHE_CONTROL, "no-store"));
    if old.head().connection_type() == actix_web::http::ConnectionType::Close {
        new.force_close();
    }
    let mut new = if wants_json {
        new.json(serde_json::json!({ "error": message, "status": status.as_u16() }))
    } else {
        let page = site.map(|site| {
            ErrorPage {
                chrome: Chrome::public(site, Tab::None),
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or("Error"),
                message: &message,
            }
            .render()
        });
        match page {
            Some(Ok(html)) => new.content_type(header::ContentType::html()).body(html),
            _ => new
                .content_type(header::ContentType::plaintext())
                .body(message),
        }
    };
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && name != header::CACHE_CONTROL
        {
            new.headers_mut().append(name.clone(), value.clone());
        }
    }
    new
}
