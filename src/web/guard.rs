//! Middleware of the stateful scope: store outages, cross-origin refusal, login rate limits,
//! and the `LoggedIn` extractor.

use std::{
    collections::VecDeque,
    future::Ready,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use actix_web::{
    FromRequest, HttpRequest,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    web,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};

use super::errors::AppError;
use crate::session::state::{SessionUser, TypedSession};

/// Turns a failure of the session layer (the store did not answer) into a 503 page with
/// `Retry-After`. The response carries no `Set-Cookie`, so the browser keeps its session.
pub async fn session_store_unavailable(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // Handlers' own errors arrive as responses; only middleware failures arrive as `Err`.
    next.call(req).await.map_err(|err| {
        tracing::error!(error = %err, "session store failed");
        AppError::Unavailable {
            what: "The session store",
        }
        .into()
    })
}

/// Whether an unsafe request comes from another site, the way Go's CrossOriginProtection
/// decides: `Sec-Fetch-Site` first, else `Origin` against the request's own host; a request
/// with neither is not from a browser and passes.
pub fn is_cross_origin(req: &HttpRequest) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    let own_host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin_host, own_host) {
        (Some(origin_host), Some(own_host)) => !origin_host.eq_ignore_ascii_case(own_host),
        _ => true,
    }
}

/// Refuses cross-site unsafe requests with 403 before the session is even loaded.
pub async fn refuse_cross_origin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if is_cross_origin(req.request()) {
        tracing::warn!(path = %req.path(), "refused a cross-origin request");
        return Err(AppError::Forbidden(
            "This form was sent from another site, so it was refused. Nothing was changed. \
             If you meant to do this, go back to statecart and try again there."
                .to_owned(),
        )
        .into());
    }
    next.call(req).await
}

/// Failed logins allowed per account in [`ACCOUNT_WINDOW`].
pub const ACCOUNT_FAILURES: usize = 10;
/// The window of the per-account failure count.
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Rate limits for /login and /register: per client address (governor) and per account.
pub struct LoginLimits {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    failures: moka::future::Cache<String, Arc<Mutex<VecDeque<Instant>>>>,
}

impl LoginLimits {
    /// `per_minute` POSTs per address (0 = no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_address: NonZeroU32::new(per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            failures: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(ACCOUNT_WINDOW)
                .build(),
        }
    }

    /// Seconds to wait if `address` is over its limit; counts this attempt otherwise.
    fn check_address(&self, address: IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.per_address else {
            return Ok(());
        };
        limiter.check_key(&address).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            wait.as_secs() + 1
        })
    }

    /// Seconds until `account` may try again, if it failed too often lately.
    pub async fn account_locked_for(&self, account: &str) -> Option<u64> {
        let failures = self.failures.get(account).await?;
        let mut failures = failures.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= ACCOUNT_WINDOW)
        {
            failures.pop_front();
        }
        (failures.len() >= ACCOUNT_FAILURES).then(|| {
            let oldest = failures.front().copied().unwrap_or(now);
            ACCOUNT_WINDOW
                .saturating_sub(now.duration_since(oldest))
                .as_secs()
                + 1
        })
    }

    /// Counts a failed login for `account` (known or not: lockout must not reveal which exist).
    pub async fn record_failure(&self, account: &str) {
        let failures = self
            .failures
            .get_with(account.to_owned(), async { Arc::default() })
            .await;
        failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Instant::now());
    }

    /// Forgets the failures of `account` after a successful login.
    pub async fn clear_failures(&self, account: &str) {
        self.failures.invalidate(account).await;
    }

    /// Drops per-address state that no longer limits anyone (run in the background).
    pub async fn housekeeping(&self) {
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
        }
        self.failures.run_pending_tasks().await;
    }
}

/// Answers 429 with `Retry-After` to POSTs on /login and /register past the per-address limit.
pub async fn limit_login_posts(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::POST && matches!(req.path(), "/login" | "/register") {
        let limits = req.app_data::<web::Data<LoginLimits>>();
        let address = req.peer_addr().map(|a| a.ip());
        if let (Some(limits), Some(address)) = (limits, address)
            && let Err(retry_after_secs) = limits.check_address(address)
        {
            return Err(AppError::TooManyRequests {
                message: format!(
                    "Too many login attempts from your address. Please wait {retry_after_secs} seconds and try again."
                ),
                retry_after_secs,
            }
            .into());
        }
    }
    next.call(req).await
}

/// A handler argument that requires a login: without one, the request is answered with a 303
/// to `/login?next=<this path>`.
pub struct LoggedIn {
    /// Who is logged in.
    pub user: SessionUser,
    /// Their session.
    pub session: TypedSession,
}

impl FromRequest for LoggedIn {
    type Error = AppError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = match TypedSession::from_request(req, payload).into_inner() {
            Ok(session) => session,
            Err(err) => {
                return std::future::ready(Err(AppError::Internal(anyhow::anyhow!("{err}"))));
            }
        };
        let result = match session.user() {
            Some(user) => Ok(Self { user, session }),
            None => {
                // A POST cannot be replayed after login; send the person back to a page instead.
                let next = if req.method() == Method::GET {
                    req.uri()
                        .path_and_query()
                        .map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned())
                } else {
                    referer_path(req).unwrap_or_else(|| "/".to_owned())
                };
                Err(AppError::LoginRequired { next })
            }
        };
        std::future::ready(result)
    }
}

/// The local path of the `Referer`, when it is this site's.
pub fn referer_path(req: &HttpRequest) -> Option<String> {
    let referer = req.headers().get(header::REFERER)?.to_str().ok()?;
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let rest = referer.split_once("://")?.1;
    let path = rest.strip_prefix(host)?;
    path.starts_with('/').then(|| path.to_owned())
}
