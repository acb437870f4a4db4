//! The typed session: every session key is a constant here, and handlers use only these methods.

use std::{collections::HashMap, future::Ready};

use actix_session::{Session, SessionExt as _};
use actix_web::{FromRequest, HttpRequest, dev::Payload};
use rand::distr::{Alphanumeric, SampleString as _};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::CookieBudget;
use crate::domain::cart::Cart;

/// Session key of the logged-in user.
pub const USER: &str = "user";
/// Session key of the login metadata (id, issue time, last seen).
pub const META: &str = "meta";
/// Session key of the one-shot message shown on the next page.
pub const FLASH: &str = "flash";
/// Session key of the cart.
pub const CART: &str = "cart";

/// Raw session state as actix-session stores it: JSON values by key.
pub type State = HashMap<String, String>;

/// Who is logged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    /// User id.
    pub id: i64,
    /// Username as chosen.
    pub name: String,
}

/// Facts about a login session, kept inside the state so every backend (the cookie one too)
/// can enforce the timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Random id of this login, to mark "this session" in listings.
    pub sid: String,
    /// Login time, epoch seconds (absolute timeout).
    pub issued_at: i64,
    /// Last activity, epoch seconds (idle timeout); refreshed at most every few seconds.
    pub last_seen: i64,
}

/// A message for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    /// True for errors, false for confirmations.
    pub error: bool,
    /// What the person reads.
    pub text: String,
}

/// The session of this request, through typed accessors only.
pub struct TypedSession(Session);

impl FromRequest for TypedSession {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self(req.get_session())))
    }
}

impl TypedSession {
    /// Wraps the session of a request (used by middleware).
    pub fn of(session: Session) -> Self {
        Self(session)
    }

    /// A value that fails to decode is treated as absent: a stale or tampered entry never errors.
    fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.0.get(key).ok().flatten()
    }

    fn set<T: Serialize>(&self, key: &str, value: &T) {
        if let Err(err) = self.0.insert(key, value) {
            tracing::error!(error = %err, key, "could not encode a session value");
        }
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<SessionUser> {
        self.get(USER)
    }

    /// The login metadata, if logged in.
    pub fn meta(&self) -> Option<Meta> {
        self.get(META)
    }

    /// Starts a login: a new session id (no fixation), the user, and fresh metadata.
    pub fn log_in(&self, user: SessionUser, now: i64) {
        self.0.clear();
        self.0.renew();
        self.set(USER, &user);
        self.set(
            META,
            &Meta {
                sid: Alphanumeric.sample_string(&mut rand::rng(), 24),
                issued_at: now,
                last_seen: now,
            },
        );
    }

    /// Ends the session: the store forgets it and the cookie is removed.
    pub fn log_out(&self) {
        self.0.purge();
    }

    /// Ends an expired login but keeps a session for the message that explains it.
    pub fn expire(&self, message: &str) {
        self.0.clear();
        self.0.renew();
        self.set_flash(true, message);
    }

    /// Records activity now (only called when the stored value is old enough to matter).
    pub fn touch(&self, mut meta: Meta, now: i64) {
        meta.last_seen = now;
        self.set(META, &meta);
    }

    /// Leaves a message for the next page.
    pub fn set_flash(&self, error: bool, text: &str) {
        self.set(
            FLASH,
            &Flash {
                error,
                text: text.to_owned(),
            },
        );
    }

    /// Takes the message left for this page, if any. A session left with nothing in it is
    /// ended, so the browser does not keep a cookie for an empty session.
    pub fn take_flash(&self) -> Option<Flash> {
        if !self.0.contains_key(FLASH) {
            return None;
        }
        let flash = self.get(FLASH);
        self.0.remove(FLASH);
        if self.is_empty() {
            self.0.purge();
        }
        flash
    }

    /// Whether the session holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.0.entries().is_empty()
    }

    /// The cart (empty when there is none or it cannot be read).
    pub fn cart(&self) -> Cart {
        self.get(CART).unwrap_or_default()
    }

    /// Stores a changed cart and the message saying what happened, or refuses both (leaving
    /// the session as it was) when the cookie would grow past what browsers keep.
    pub fn set_cart(
        &self,
        cart: &Cart,
        flash: &str,
        budget: &CookieBudget,
    ) -> Result<(), StateTooLarge> {
        let mut next: State = self.0.entries().clone();
        next.insert(CART.to_owned(), to_json(cart));
        next.insert(
            FLASH.to_owned(),
            to_json(&Flash {
                error: false,
                text: flash.to_owned(),
            }),
        );
        if !budget.fits(&next) {
            return Err(StateTooLarge);
        }
        self.set(CART, cart);
        self.set_flash(false, flash);
        Ok(())
    }

    /// Every entry as stored, for the inspector.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut entries: Vec<_> = self
            .0
            .entries()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort();
        entries
    }
}

/// The user id inside raw state, for stores that index sessions by user.
pub fn user_id_of(state: &State) -> Option<i64> {
    state
        .get(USER)
        .and_then(|v| serde_json::from_str::<SessionUser>(v).ok())
        .map(|u| u.id)
}

/// The login metadata inside raw state, for stores that list sessions.
pub fn meta_of(state: &State) -> Option<Meta> {
    state.get(META).and_then(|v| serde_json::from_str(v).ok())
}

/// A fresh random session key for server-side stores (62^64 possibilities).
pub fn random_key() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 64)
}

/// A session change refused because the cookie would exceed what browsers keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateTooLarge;

/// A value encoded the way the session layer stores it.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
