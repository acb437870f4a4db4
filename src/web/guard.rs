//! Middleware of the stateful scope: store outages, cross-origin refusal, login rate limits,
//! and the `LoggedIn` extractor.

use std::{
    future::Ready,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use actix_web::{
    FromRequest, HttpMessage as _, HttpRequest,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    web,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use sha2::{Digest, Sha256};

use super::{client, errors::AppError};
use crate::{
    config::Settings,
    session::{
        guests::ClientAddress,
        state::{SessionUser, TypedSession},
    },
};

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

/// Puts the client's address, as the limits count it (trusted proxies included), into the
/// request for the session layer: new guest sessions are limited per address.
pub async fn note_client_address(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let trusted = req
        .app_data::<web::Data<Settings>>()
        .map(|s| s.trusted_proxies.as_slice())
        .unwrap_or_default();
    if let Some(address) = client::address(req.request(), trusted) {
        req.extensions_mut().insert(ClientAddress(address));
    }
    next.call(req).await
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

/// Failed logins one address may make on one account before each further one costs a wait.
pub const FREE_FAILURES: u32 = 5;
/// The first wait; each further failure doubles it, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(10);
/// The longest wait between two attempts on one account from one address.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten after this long without another attempt.
pub const FAILURES_KEPT: Duration = Duration::from_secs(60 * 60);
/// Memory the failure counts may use at most (each entry weighs [`ENTRY_WEIGHT`] bytes).
const FAILURES_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes one failure entry holds: its 32-byte key, the counter and its shared cell.
const ENTRY_WEIGHT: u32 = 128;

/// Where one account stands with one address: failures so far and the wait they earned.
#[derive(Debug, Default)]
struct Throttle {
    failures: u32,
    blocked_until: Option<Instant>,
}

/// Rate limits for /login and /register: POSTs per client address (governor), and failed
/// logins per account *and* address, with growing waits. An attacker guessing one account
/// slows down; its owner, from another address, logs in as usual.
pub struct LoginLimits {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Keyed by a hash of account and address: a fixed 32 bytes whatever the username sent.
    failures: moka::future::Cache<[u8; 32], Arc<Mutex<Throttle>>>,
}

/// The wait after `failures` failed logins, if any.
fn delay_after(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES)?;
    let factor = 1_u32.checked_shl(over).unwrap_or(u32::MAX);
    Some(FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY))
}

impl LoginLimits {
    /// `per_minute` POSTs per address (0 = no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_address: NonZeroU32::new(per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            failures: moka::future::Cache::builder()
                .weigher(|_, _| ENTRY_WEIGHT)
                .max_capacity(FAILURES_MAX_BYTES)
                .time_to_idle(FAILURES_KEPT)
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

    /// The key of an account (as typed, any length) and an address.
    fn key(account: &str, address: Option<IpAddr>) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(account.trim().to_lowercase().as_bytes());
        hash.update([0]);
        hash.update(address.map(|a| a.to_string()).unwrap_or_default());
        hash.finalize().into()
    }

    /// Seconds until `account` may be tried again from `address`, if failures earned a wait.
    pub async fn throttled_for(&self, account: &str, address: Option<IpAddr>) -> Option<u64> {
        let throttle = self.failures.get(&Self::key(account, address)).await?;
        let throttle = throttle.lock().unwrap_or_else(PoisonError::into_inner);
        let left = throttle
            .blocked_until?
            .checked_duration_since(Instant::now())?;
        Some(left.as_secs() + 1)
    }

    /// Counts a failed login (known account or not: throttling must not reveal which exist).
    pub async fn record_failure(&self, account: &str, address: Option<IpAddr>) {
        let throttle = self
            .failures
            .get_with(Self::key(account, address), async { Arc::default() })
            .await;
        let mut throttle = throttle.lock().unwrap_or_else(PoisonError::into_inner);
        throttle.failures = throttle.failures.saturating_add(1);
        throttle.blocked_until = delay_after(throttle.failures).map(|d| Instant::now() + d);
    }

    /// Forgets the failures of `account` from `address` after a successful login.
    pub async fn clear_failures(&self, account: &str, address: Option<IpAddr>) {
        self.failures.invalidate(&Self::key(account, address)).await;
    }

    /// Drops per-address state that no longer limits anyone (run in the background).
    pub async fn housekeeping(&self) {
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
        }
        self.failures.run_pending_tasks().await;
    }
}

/// Answers 429 with `Retry-After` to POSTs past the per-address limit. It wraps the /login
/// and /register resources themselves, so whatever spelling of the path the router matched
/// (`/%6Cogin` is `/login`) is limited. The 429 is a response, not an error: errors from
/// inside the session middleware read as a store outage.
pub async fn limit_login_posts(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::POST {
        let limits = req.app_data::<web::Data<LoginLimits>>();
        let settings = req.app_data::<web::Data<Settings>>();
        let address = settings.and_then(|s| client::address(req.request(), &s.trusted_proxies));
        if let (Some(limits), Some(address)) = (limits, address)
            && let Err(retry_after_secs) = limits.check_address(address)
        {
            let refusal = AppError::TooManyRequests {
                message: format!(
                    "Too many login attempts from your address. Please wait {retry_after_secs} seconds and try again."
                ),
                retry_after_secs,
            };
            if req.match_pattern().as_deref() == Some("/login") {
                crate::metrics::login(crate::metrics::LoginOutcome::Throttled);
            }
            return Ok(req.error_response(refusal).map_into_right_body());
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_the_free_failures_and_double_up_to_the_cap() {
        assert_eq!(delay_after(FREE_FAILURES - 1), None);
        assert_eq!(delay_after(FREE_FAILURES), Some(FIRST_DELAY));
        assert_eq!(delay_after(FREE_FAILURES + 1), Some(FIRST_DELAY * 2));
        assert_eq!(delay_after(FREE_FAILURES + 3), Some(FIRST_DELAY * 8));
        assert_eq!(delay_after(FREE_FAILURES + 40), Some(MAX_DELAY));
        assert_eq!(delay_after(u32::MAX), Some(MAX_DELAY));
    }

    #[tokio::test]
    async fn failures_count_per_account_and_address() {
        let limits = LoginLimits::new(0);
        let here = Some(IpAddr::from([192, 0, 2, 1]));
        let there = Some(IpAddr::from([192, 0, 2, 2]));
        for _ in 0..FREE_FAILURES {
            assert_eq!(limits.throttled_for("Alice", here).await, None);
            limits.record_failure("alice", here).await;
        }
        assert!(limits.throttled_for(" ALICE ", here).await.is_some());
        assert_eq!(limits.throttled_for("alice", there).await, None);
        assert_eq!(limits.throttled_for("bob", here).await, None);
        limits.clear_failures("alice", here).await;
        assert_eq!(limits.throttled_for("alice", here).await, None);
    }

    #[tokio::test]
    async fn a_huge_username_costs_one_fixed_size_entry() {
        let limits = LoginLimits::new(0);
        let name = "x".repeat(16 * 1024);
        limits.record_failure(&name, None).await;
        limits.failures.run_pending_tasks().await;
        assert_eq!(limits.failures.weighted_size(), u64::from(ENTRY_WEIGHT));
    }
}
