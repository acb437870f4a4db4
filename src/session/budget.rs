//! What a session change may cost: on the cookie backend the state travels in the cookie, so
//! a change that would outgrow what browsers keep is refused before it is made.

use super::state::State;
use crate::config::SessionBackend;

/// Browsers refuse cookies larger than this (name and value, as sent).
pub const MAX_COOKIE_BYTES: usize = 4096;

/// Bytes kept free for the varying percent-encoding of a fresh encryption (see
/// [`CookieBudget::fits`]): about seven standard deviations at a 4 KiB cookie.
pub const ENCODING_MARGIN: usize = 96;

/// What a change to the session may cost: on the cookie backend the whole state travels in the
/// cookie, so a change that would push it past [`MAX_COOKIE_BYTES`] is refused up front
/// instead of being dropped silently by the browser.
#[derive(Clone)]
pub enum CookieBudget {
    /// Server-side state: the cookie holds only a key.
    Unlimited {
        /// The configured `cart_max_lines`.
        max_lines: usize,
    },
    /// The state is encrypted into the cookie with this key, under this cookie name.
    Cookie {
        /// The key that seals the cookie.
        key: actix_web::cookie::Key,
        /// The session cookie's name.
        name: &'static str,
        /// The configured `cart_max_lines`, for the message of a refused change.
        max_lines: usize,
    },
}

impl CookieBudget {
    /// The budget for `backend`, whose session cookie is `name` and whose carts hold at most
    /// `max_lines` lines.
    pub fn new(
        backend: SessionBackend,
        key: &actix_web::cookie::Key,
        name: &'static str,
        max_lines: usize,
    ) -> Self {
        match backend {
            SessionBackend::Cookie => Self::Cookie {
                key: key.clone(),
                name,
                max_lines,
            },
            _ => Self::Unlimited { max_lines },
        }
    }

    /// The configured `cart_max_lines`.
    pub fn max_lines(&self) -> usize {
        match self {
            Self::Unlimited { max_lines } | Self::Cookie { max_lines, .. } => *max_lines,
        }
    }

    /// Exact size of the cookie this state would become (encrypted and encoded), if it
    /// lives in the cookie.
    pub fn cookie_bytes(&self, state: &State) -> Option<usize> {
        let Self::Cookie { key, name, .. } = self else {
            return None;
        };
        let json = serde_json::to_string(state).ok()?;
        let mut jar = actix_web::cookie::CookieJar::new();
        jar.private_mut(key)
            .add(actix_web::cookie::Cookie::new(*name, json));
        let cookie = jar.delta().next()?;
        Some(cookie.encoded().to_string().len())
    }

    /// Whether a change from `before` to `after` may be kept: one that does not make the state
    /// longer always may (the cookie it replaces held as much), so that a session at its size
    /// limit can still be touched, or move to a new epoch, whatever one encryption measures.
    pub fn allows(&self, before: &State, after: &State) -> bool {
        let json_len = |s: &State| serde_json::to_string(s).map_or(usize::MAX, |j| j.len());
        matches!(self, Self::Unlimited { .. })
            || json_len(after) <= json_len(before)
            || self.fits(after)
    }

    /// Whether a session with this state can be kept (see [`CookieBudget::allows`]).
    ///
    /// The cookie that is finally sent is a fresh encryption (a new random nonce) of the same
    /// state: its base64 text has the same length, but each `/` in it is percent-encoded to
    /// three bytes, and how many there are varies. With about 1 in 64 characters a `/`, the
    /// spread is a few dozen bytes; [`ENCODING_MARGIN`] keeps the real cookie under the limit
    /// with overwhelming probability.
    pub fn fits(&self, state: &State) -> bool {
        match self {
            Self::Unlimited { .. } => true,
            Self::Cookie { .. } => self
                .cookie_bytes(state)
                .is_some_and(|bytes| bytes + ENCODING_MARGIN <= MAX_COOKIE_BYTES),
        }
    }
}
