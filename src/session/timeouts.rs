//! Soft state on every backend: the idle and absolute timeouts, checked on each request, and
//! the notice that tells a person why their session ended.
//!
//! The notice travels in a small cookie of its own, never in the store: a browser that brings
//! a session the server does not know (expired, revoked, forged) must not make the server
//! create a record just to say so, or a flood of garbage cookies would fill the store.

use std::{cell::RefCell, rc::Rc};

use actix_web::{
    HttpMessage as _,
    body::MessageBody,
    cookie::{Cookie, SameSite, time::Duration},
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};

use super::{
    COOKIE_NAME, Store,
    revocation::Revocation,
    state::{ChangeError, TypedSession},
};
use crate::{
    config::Settings,
    domain::{now_epoch, secs},
    web::errors::AppError,
};

/// How often a login's last-seen time is rewritten: often enough for the idle timeout to be
/// accurate, rarely enough that reading a page is not a write on every request.
pub fn touch_interval_secs(idle_timeout: std::time::Duration) -> i64 {
    secs(idle_timeout / 30).clamp(1, 60)
}

/// What a person reads when their browser brings a session the server no longer has.
pub const SESSION_ENDED: &str = "Your session has ended (it expired, was ended elsewhere, or \
     the server no longer has it). Please log in again.";

/// Name of the cookie that carries a [`Notice`] to the next page.
pub const NOTICE_COOKIE: &str = "statecart_notice";

/// Why a session ended, said once on the next page that shows messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The browser brought a session the server does not have.
    Ended,
    /// The idle timeout passed.
    Idle,
    /// The absolute timeout passed.
    MaxLength,
    /// A guest's cart was idle past `guest_idle_timeout_secs`.
    GuestIdle,
}

impl Notice {
    fn code(self) -> &'static str {
        match self {
            Self::Ended => "ended",
            Self::Idle => "idle",
            Self::MaxLength => "max",
            Self::GuestIdle => "guest",
        }
    }

    fn parse(code: &str) -> Option<Self> {
        match code {
            "ended" => Some(Self::Ended),
            "idle" => Some(Self::Idle),
            "max" => Some(Self::MaxLength),
            "guest" => Some(Self::GuestIdle),
            _ => None,
        }
    }

    /// What the person reads.
    pub fn text(self) -> &'static str {
        match self {
            Self::Ended => SESSION_ENDED,
            Self::Idle => "Your session ended after a period of inactivity. Please log in again.",
            Self::MaxLength => "Your session reached its maximum length. Please log in again.",
            Self::GuestIdle => {
                "Your cart was emptied after a period of inactivity. Log in or create an account \
                 to keep a cart longer."
            }
        }
    }
}

/// The notice of one request: one brought by the browser, one this request raised, and
/// whether a page has shown it.
#[derive(Debug, Default)]
pub struct Notices {
    incoming: Option<Notice>,
    fresh: Option<Notice>,
    shown: bool,
}

/// [`Notices`] as request extensions hold them, shared with the handler's session.
pub type SharedNotices = Rc<RefCell<Notices>>;

impl Notices {
    /// Takes the notice to show on this page, once.
    pub fn take(&mut self) -> Option<Notice> {
        if self.shown {
            return None;
        }
        let notice = self.fresh.or(self.incoming)?;
        self.shown = true;
        Some(notice)
    }
}

fn notice_cookie(value: &str, secure: bool) -> Cookie<'static> {
    let mut cookie = Cookie::build(NOTICE_COOKIE, value.to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .finish();
    if value.is_empty() {
        cookie.make_removal();
    } else {
        cookie.set_max_age(Duration::minutes(10));
    }
    cookie
}

/// Ends a session idle for `idle_secs` since `last_seen` (saying so with `ended`), or records
/// activity when the stored time is old enough to be worth a write. Either way the notice to
/// show, if any. `listed` is the login's row on the cookie backend with `cookie_revocation`
/// (its id): the same touch moves its "last active" there, and only then.
async fn keep_alive(
    session: &TypedSession,
    last_seen: i64,
    idle_timeout: std::time::Duration,
    now: i64,
    ended: Notice,
    listed: Option<(&Revocation, &str)>,
) -> Result<Option<Notice>, actix_web::Error> {
    let idle = now.saturating_sub(last_seen);
    if idle >= secs(idle_timeout) {
        session.end();
        return Ok(Some(ended));
    }
    if idle < touch_interval_secs(idle_timeout) {
        return Ok(None);
    }
    // A login's last activity, or a guest's (each kind touches only its own).
    let touched = session
        .change(|s| {
            s.touch(now);
            s.touch_visit(now);
            Ok::<_, std::convert::Infallible>(())
        })
        .await;
    match touched {
        Ok(()) => {
            if let Some((revocation, sid)) = listed {
                revocation
                    .touch(sid, now)
                    .await
                    .map_err(|err| AppError::from(super::StoreError::from(err)))?;
            }
            Ok(None)
        }
        // Another request kept saving first: it recorded activity too.
        Err(
            ChangeError::Refused(_)
            | ChangeError::TooLarge { .. }
            | ChangeError::Busy
            | ChangeError::GuestRefused(_),
        ) => Ok(None),
        // A login moved this session on: the browser holds the new one, say nothing.
        Err(ChangeError::Moved) => Ok(None),
        Err(ChangeError::Ended) => Ok(Some(Notice::Ended)),
        Err(ChangeError::Store(err)) => Err(AppError::from(err).into()),
    }
}

/// Enforces the idle and absolute timeouts on every backend, the cookie one included (the times
/// live inside the encrypted state), refreshes last activity now and then, ends sessions that
/// are left empty, and carries the notice of an ended session to the page that shows it.
pub async fn enforce_timeouts(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let settings = req.app_data::<web::Data<Settings>>().cloned();
    let notices = SharedNotices::new(RefCell::new(Notices {
        incoming: req
            .cookie(NOTICE_COOKIE)
            .and_then(|c| Notice::parse(c.value())),
        ..Notices::default()
    }));
    req.extensions_mut().insert(Rc::clone(&notices));
    let cookie_name = settings.as_ref().map_or(COOKIE_NAME, |s| s.cookie_name());
    let carried_session = req.cookie(cookie_name).is_some();
    let session = TypedSession::of(req.request());

    let mut fresh = None;
    let now = now_epoch();
    if let Some(settings) = &settings
        && let Some(meta) = session.meta()
    {
        let absolute = secs(settings.absolute_timeout);
        fresh = if now.saturating_sub(meta.issued_at) >= absolute {
            session.end();
            Some(Notice::MaxLength)
        } else {
            let revocation = req
                .app_data::<web::Data<Store>>()
                .and_then(|store| store.revocation());
            keep_alive(
                &session,
                meta.last_seen,
                settings.idle_timeout,
                now,
                Notice::Idle,
                revocation.map(|r| (r, meta.sid.as_str())),
            )
            .await?
        };
    } else if let Some(settings) = &settings
        && let Some(visit) = session.visit()
    {
        // A guest: the same soft state, with the guests' own (shorter) idle timeout.
        fresh = keep_alive(
            &session,
            visit.last_seen,
            settings.guest_idle_timeout,
            now,
            Notice::GuestIdle,
            None,
        )
        .await?;
    } else if session.is_empty() && carried_session {
        // The browser holds a session the server no longer knows (expired from the store,
        // revoked, lost in a restart of the memory backend, or never issued).
        fresh = Some(Notice::Ended);
    }
    // The cookie backend with `cookie_revocation`: a login the server ended (logged out, or
    // older than the user's epoch) is refused, on every instance sharing the database.
    if fresh.is_none()
        && let Some(store) = req.app_data::<web::Data<Store>>()
        && let Some(revocation) = store.revocation()
        && let (Some(meta), Some(user)) = (session.meta(), session.user())
    {
        match revocation.is_revoked(&meta.sid, user.id, meta.epoch).await {
            Ok(false) => {}
            Ok(true) => {
                session.end();
                fresh = Some(Notice::Ended);
            }
            Err(err) => return Err(AppError::from(err).into()),
        }
    }
    notices.borrow_mut().fresh = fresh;

    let mut res = next.call(req).await?;
    if carried_session && session.is_empty() {
        // Nothing is kept for an empty session: no record, no cookie. (actix-session removes
        // the cookie only of a session it found; one the store no longer has is removed here.)
        session.log_out();
        let stale = Cookie::build(cookie_name, "").path("/").finish();
        if let Err(err) = res.response_mut().add_removal_cookie(&stale) {
            tracing::warn!(error = %err, "could not remove a stale session cookie");
        }
    }
    let notices = notices.borrow();
    let secure = settings.is_some_and(|s| s.cookie_secure);
    let cookie = match (notices.fresh, notices.incoming, notices.shown) {
        (Some(fresh), _, false) => Some(notice_cookie(fresh.code(), secure)),
        (_, Some(_), true) => Some(notice_cookie("", secure)),
        _ => None,
    };
    if let Some(cookie) = cookie
        && let Err(err) = res.response_mut().add_cookie(&cookie)
    {
        tracing::warn!(error = %err, "could not set the notice cookie");
    }
    Ok(res)
}
