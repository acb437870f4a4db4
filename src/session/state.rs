//! The typed session: every session key is a constant here, handlers use only these methods,
//! and every change goes through one write path.

use std::{collections::HashMap, convert::Infallible, future::Ready};

use actix_session::{Session, SessionExt as _, SessionStatus};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, dev::Payload, web};
use rand::distr::{Alphanumeric, SampleString as _};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    Store, StoreError,
    budget::{CookieBudget, MAX_COOKIE_BYTES},
    guests::{ClientAddress, GuestGate, GuestRefusal},
    timeouts::SharedNotices,
};
use crate::domain::cart::{Cart, CartMerge};

/// Session key of the logged-in user.
pub const USER: &str = "user";
/// Session key of the login metadata (id, issue time, last seen).
pub const META: &str = "meta";
/// Session key of the one-shot message shown on the next page.
pub const FLASH: &str = "flash";
/// Session key of the cart.
pub const CART: &str = "cart";
/// Session key of a guest's last activity (a session with a cart and no login).
pub const VISIT: &str = "visit";
/// Session key that marks a record a login took over (epoch seconds of the login). The login
/// moved this session's state to a new key; a request still holding the old key is refused
/// rather than let its write land where no browser will look. It never reaches a cookie.
pub const MOVED: &str = "moved";
/// Session key of the one-shot note /account shows after a login ended older sessions of its
/// user (`max_sessions_per_user`).
pub const CAPPED: &str = "capped";

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
    /// The user's revocation epoch at login (cookie backend with `cookie_revocation`): "log out
    /// other sessions" moves the user's epoch past it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: i64,
    /// The device label read from the User-Agent at login ("Firefox on Linux"), for /account.
    /// Short on the wire: on the cookie backend every byte travels with each request.
    #[serde(default, rename = "dev", skip_serializing_if = "String::is_empty")]
    pub device: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A guest's visit: kept inside the state so every backend, the cookie one too, can end an
/// idle guest cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    /// Last activity, epoch seconds; refreshed at most every few seconds.
    pub last_seen: i64,
}

/// A message for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    /// How the page shows it.
    pub level: Level,
    /// What the person reads.
    pub text: String,
}

/// How a [`Flash`] reads: a confirmation or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something was done.
    Info,
    /// Something went wrong or ended.
    Error,
}

impl Level {
    /// The CSS class of the message.
    pub fn class(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Error => "error",
        }
    }
}

impl Flash {
    /// A confirmation.
    pub fn info(text: impl Into<String>) -> Self {
        Self {
            level: Level::Info,
            text: text.into(),
        }
    }

    /// Something went wrong or ended.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            text: text.into(),
        }
    }
}

/// The store's bookkeeping inside a loaded state: which record it came from and its version.
/// Only server-side stores add it; it never reaches a page, a cookie or the stored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Loaded {
    /// The session key.
    pub k: String,
    /// The version the state was loaded (or last saved) at.
    pub v: u64,
    /// Set once this request saved its change itself: the middleware then has nothing to do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub saved: bool,
}

/// Entry name of [`Loaded`] inside the state a server-side store loads.
pub const LOADED: &str = "~";

/// The session of this request, through typed accessors only.
///
/// Reads come from the state the middleware loaded. Every write goes through one path,
/// [`TypedSession::change`]: a function applied to the state and, on a server-side store,
/// saved with compare-and-swap against the version that was loaded. When another request of
/// the same session saved first, the function runs again on the fresh state, so parallel
/// requests never undo each other's acknowledged changes.
pub struct TypedSession {
    session: Session,
    store: Option<web::Data<Store>>,
    locks: Option<web::Data<WriteLocks>>,
    budget: Option<web::Data<CookieBudget>>,
    notices: Option<SharedNotices>,
    guests: Option<(web::Data<GuestGate>, Option<ClientAddress>)>,
}

impl FromRequest for TypedSession {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Self::of(req)))
    }
}

/// Bounded retries of a change that keeps losing the race to other requests of its session.
const MAX_ATTEMPTS: u64 = 16;

/// Changes of one session queue behind each other within this process, so their
/// compare-and-swap saves do not keep failing each other; the version check still decides
/// between instances. Striped: a fixed number of locks, chosen by a hash of the session key.
/// Each stripe remembers the last state saved through it, so the next change of the same
/// session starts from there instead of reading it back from the store.
pub struct WriteLocks(Box<[tokio::sync::Mutex<Option<LastSaved>>]>);

/// The last state a stripe saved: a change of the same session starts from it when it is
/// newer than what the request loaded (another instance may have saved since: the version
/// check then fails and the change reloads).
struct LastSaved {
    key: String,
    version: u64,
    state: State,
}

impl WriteLocks {
    const STRIPES: usize = 256;

    /// One lock per stripe.
    pub fn new() -> Self {
        Self(
            (0..Self::STRIPES)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
        )
    }

    fn of(&self, key: &str) -> &tokio::sync::Mutex<Option<LastSaved>> {
        use std::hash::{BuildHasher as _, RandomState};
        static SEED: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let hash = SEED.get_or_init(RandomState::new).hash_one(key);
        // The remainder is below STRIPES, so it fits a usize.
        &self.0[usize::try_from(hash % Self::STRIPES as u64).unwrap_or_default()]
    }
}

impl Default for WriteLocks {
    fn default() -> Self {
        Self::new()
    }
}

/// A session's place in its write stripe, held while its change is saved.
type Queued<'a> = Option<tokio::sync::MutexGuard<'a, Option<LastSaved>>>;

/// Notes in the stripe what was just saved under `key`, for the next change of that session.
fn remember(queued: &mut Queued<'_>, key: &str, version: u64, state: State) {
    if let Some(last) = queued.as_deref_mut() {
        *last = Some(LastSaved {
            key: key.to_owned(),
            version,
            state,
        });
    }
}

/// Why a session change did not happen. The session is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError<E> {
    /// The change itself refused (for example: the cart is full); nothing was written.
    #[error("refused")]
    Refused(E),
    /// On the cookie backend, the cookie would outgrow what browsers keep.
    #[error("the session cookie would pass {MAX_COOKIE_BYTES} bytes")]
    TooLarge {
        /// The configured `cart_max_lines`, for the message.
        max_lines: usize,
    },
    /// The session no longer exists on the server (logged out, revoked or expired meanwhile).
    #[error("the session ended")]
    Ended,
    /// Other requests of this session kept saving first; the client may retry.
    #[error("too many parallel changes to one session")]
    Busy,
    /// A login moved this session to a new key while the change was on its way: the change
    /// was not applied (applying it to the old key would acknowledge a write no page shows).
    #[error("a login moved the session")]
    Moved,
    /// Starting one more guest session now is refused (too many from this client address,
    /// or the store holds as many guests as it may).
    #[error("guest session refused")]
    GuestRefused(GuestRefusal),
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TypedSession {
    /// The session of a request, with the store and cookie budget of its app.
    pub fn of(req: &HttpRequest) -> Self {
        Self {
            session: req.get_session(),
            store: req.app_data::<web::Data<Store>>().cloned(),
            locks: req.app_data::<web::Data<WriteLocks>>().cloned(),
            budget: req.app_data::<web::Data<CookieBudget>>().cloned(),
            notices: req.extensions().get::<SharedNotices>().cloned(),
            guests: req
                .app_data::<web::Data<GuestGate>>()
                .cloned()
                .map(|gate| (gate, req.extensions().get::<ClientAddress>().copied())),
        }
    }

    /// A value that fails to decode is treated as absent: a stale or tampered entry never errors.
    fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.session.get(key).ok().flatten()
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<SessionUser> {
        self.get(USER)
    }

    /// The login metadata, if logged in.
    pub fn meta(&self) -> Option<Meta> {
        self.get(META)
    }

    /// The cart (empty when there is none or it cannot be read).
    pub fn cart(&self) -> Cart {
        self.get(CART).unwrap_or_default()
    }

    /// A guest's visit, if this is a guest session.
    pub fn visit(&self) -> Option<Visit> {
        self.get(VISIT)
    }

    /// Whether the session holds nothing at all. A record a login took over is not empty: a
    /// request still holding its key must not clear the browser's cookie, which by now may be
    /// the new login's.
    pub fn is_empty(&self) -> bool {
        self.session.entries().keys().all(|k| k == LOADED)
    }

    /// Every entry as stored, for the inspector.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut entries: Vec<_> = self
            .session
            .entries()
            .iter()
            .filter(|(k, _)| k.as_str() != LOADED)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort();
        entries
    }

    /// Starts a login: a new session id (no fixation), the user, and fresh metadata.
    ///
    /// On a server-side store the old record is taken over by compare-and-set on the state as
    /// it is *now* (not as this request loaded it before hashing the password): the record
    /// becomes a [`MOVED`] marker only if no other request saved since, else the fresh state
    /// is read and the swap tried again. So a guest's add that landed while the password was
    /// checked comes along, and one that lands after is refused ([`ChangeError::Moved`]),
    /// never acknowledged onto a key no browser uses any more.
    ///
    /// Only a guest's cart (or this same user's) comes along, trimmed to `max_lines` lines; a
    /// session of another user starts clean, and that user's session ends here. Returns what
    /// came along.
    pub async fn log_in(
        &self,
        user: SessionUser,
        now: i64,
        epoch: i64,
        max_lines: usize,
    ) -> Result<Option<CartMerge>, ChangeError<Infallible>> {
        let (mut current, loaded) = self.snapshot();
        if let (Some(store), Some(loaded)) = (self.store.as_deref(), loaded) {
            current = self.take_over(store, current, loaded, now).await?;
        }
        let another_users = user_id_of(&current).is_some_and(|id| id != user.id);
        let carried = if another_users {
            Cart::default()
        } else {
            current
                .get(CART)
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default()
        };
        self.session.clear();
        self.session.renew();
        let merge = (!carried.is_empty()).then(|| {
            let mut cart = Cart::default();
            let merge = cart.merge(&carried, max_lines);
            self.put(CART, &to_json(&cart));
            merge
        });
        self.put(USER, &to_json(&user));
        self.put(
            META,
            &to_json(&Meta {
                sid: Alphanumeric.sample_string(&mut rand::rng(), 24),
                issued_at: now,
                last_seen: now,
                epoch,
                device: String::new(),
            }),
        );
        Ok(merge)
    }

    /// Turns the record under `loaded.k` into a [`MOVED`] marker by compare-and-set and
    /// returns the state it held just before (empty when it was gone or already moved).
    async fn take_over(
        &self,
        store: &Store,
        mut current: State,
        loaded: Loaded,
        now: i64,
    ) -> Result<State, ChangeError<Infallible>> {
        // Changes of this session in this process wait for the takeover, then see the marker.
        let (mut queued, fresh, mut version) = self.queue(&loaded, current).await;
        current = fresh;
        let marker = State::from([(MOVED.to_owned(), now.to_string())]);
        for _ in 0..MAX_ATTEMPTS {
            if current.contains_key(MOVED) {
                // Another login of this same session moved it first: nothing to carry.
                return Ok(State::new());
            }
            if let Some(saved) = store.swap(&loaded.k, version, &marker).await? {
                remember(&mut queued, &loaded.k, saved, marker);
                return Ok(current);
            }
            match store.load_versioned(&loaded.k).await? {
                Some(fresh) => (current, version) = fresh,
                // Ended meanwhile (logout, revocation, expiry): nothing to carry.
                None => return Ok(State::new()),
            }
        }
        tracing::warn!("gave up a login takeover after {MAX_ATTEMPTS} conflicting saves");
        Err(ChangeError::Busy)
    }

    /// Ends an expired login; the request goes on without one (and may log in afresh). A
    /// session still empty when the request ends keeps no record and no cookie.
    pub fn end(&self) {
        self.session.clear();
        self.session.renew();
    }

    /// The revocation epoch a new login of `user_id` starts in (0 unless the cookie backend
    /// runs with `cookie_revocation`).
    pub async fn login_epoch(&self, user_id: i64) -> Result<i64, StoreError> {
        match self.store.as_deref().and_then(|store| store.revocation()) {
            Some(revocation) => Ok(revocation.epoch_of(user_id).await?),
            None => Ok(0),
        }
    }

    /// Ends the session: the store forgets it and the cookie is removed. Nothing a racing
    /// request saves afterwards brings it back (stores never re-create a deleted record).
    pub fn log_out(&self) {
        self.session.purge();
    }

    /// Applies `change` to the session state and saves it, or answers why not (the session is
    /// then unchanged). The function may run more than once, on fresher state each time: it
    /// must decide from the [`Draft`] it is given, not from what the handler read earlier.
    pub async fn change<T, E>(
        &self,
        mut change: impl FnMut(&mut Draft<'_>) -> Result<T, E>,
    ) -> Result<T, ChangeError<E>> {
        let (mut current, loaded) = self.snapshot();
        if current.contains_key(MOVED) {
            return Err(ChangeError::Moved);
        }
        let (Some(store), Some(loaded)) = (self.store.as_deref(), loaded) else {
            // The state travels with this response: the cookie backend, or a session this
            // request creates (a new key no other request knows yet).
            let mut next = current.clone();
            let out = change(&mut Draft(&mut next)).map_err(ChangeError::Refused)?;
            if next != current {
                if current.is_empty() && !next.contains_key(USER) {
                    self.admit_guest().await?;
                }
                if let Some(budget) = self.budget.as_deref()
                    && !budget.allows(&current, &next)
                {
                    return Err(ChangeError::TooLarge {
                        max_lines: budget.max_lines(),
                    });
                }
                self.replace(next, None);
            }
            return Ok(out);
        };
        let (mut queued, fresh, mut version) = self.queue(&loaded, current).await;
        current = fresh;
        if current.contains_key(MOVED) {
            return Err(ChangeError::Moved);
        }
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                crate::metrics::cas_retry();
                // Lost to another instance: back off a little, at random, before trying again.
                let pause = rand::random_range(0..=attempt);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            let mut next = current.clone();
            let out = change(&mut Draft(&mut next)).map_err(ChangeError::Refused)?;
            if next == current {
                return Ok(out);
            }
            if let Some(saved) = store.swap(&loaded.k, version, &next).await? {
                let gone = next.is_empty();
                remember(&mut queued, &loaded.k, saved, next.clone());
                self.replace(
                    next,
                    Some(Loaded {
                        k: loaded.k,
                        v: saved,
                        saved: true,
                    }),
                );
                if gone {
                    // The record is deleted; the middleware clears the cookie.
                    self.session.purge();
                }
                return Ok(out);
            }
            crate::metrics::cas_conflict();
            (current, version) = self.reload(store, &loaded.k).await?;
            if current.contains_key(MOVED) {
                return Err(ChangeError::Moved);
            }
        }
        crate::metrics::cas_given_up();
        tracing::warn!("gave up a session change after {MAX_ATTEMPTS} conflicting saves");
        Err(ChangeError::Busy)
    }

    /// Queues behind the other changes of this session in this process (its write stripe)
    /// and returns the stripe's guard with the freshest state known here: what the last save
    /// through the stripe left, when that is newer than `current`, the state this request
    /// loaded.
    async fn queue(&self, loaded: &Loaded, current: State) -> (Queued<'_>, State, u64) {
        let queued = match self.locks.as_deref() {
            None => None,
            Some(locks) => Some(locks.of(&loaded.k).lock().await),
        };
        if let Some(Some(last)) = queued.as_deref()
            && last.key == loaded.k
            && last.version > loaded.v
        {
            // A request of this session saved since this one loaded: start from its result.
            let (state, version) = (last.state.clone(), last.version);
            return (queued, state, version);
        }
        (queued, current, loaded.v)
    }

    /// The state as the store holds it now; a session gone meanwhile (logout, revocation,
    /// expiry) stays gone, and this request ends it for the browser too.
    async fn reload<E>(&self, store: &Store, key: &str) -> Result<(State, u64), ChangeError<E>> {
        match store.load_versioned(key).await? {
            Some(fresh) => Ok(fresh),
            None => {
                self.session.purge();
                Err(ChangeError::Ended)
            }
        }
    }

    /// Lets a new guest session be created, or says why not. Only stores that keep server
    /// state hold a gate (the cookie backend keeps nothing to bound).
    async fn admit_guest<E>(&self) -> Result<(), ChangeError<E>> {
        match &self.guests {
            Some((gate, address)) => gate.admit(address.map(|a| a.0)).await.map_err(|why| {
                crate::metrics::guest_refused();
                ChangeError::GuestRefused(why)
            }),
            None => Ok(()),
        }
    }

    /// Leaves a message for the next page.
    pub async fn set_flash(&self, flash: Flash) -> Result<(), ChangeError<Infallible>> {
        self.change(|s| {
            s.set_flash(flash.clone());
            Ok(())
        })
        .await
    }

    /// Takes the message left for this page, if any. A session left with nothing in it is
    /// ended, so the browser does not keep a cookie for an empty session.
    /// A notice of an ended session (carried without server state) comes after the session's
    /// own message.
    pub async fn take_flash(&self) -> Result<Option<Flash>, ChangeError<Infallible>> {
        if self.session.contains_key(FLASH)
            && let Some(flash) = self.change(|s| Ok(s.take_flash())).await?
        {
            return Ok(Some(flash));
        }
        let notice = self.notices.as_ref().and_then(|n| n.borrow_mut().take());
        Ok(notice.map(|n| Flash::error(n.text())))
    }

    /// Takes the note /account shows once after a login ended older sessions, if any.
    pub async fn take_capped_note(&self) -> Result<Option<String>, ChangeError<Infallible>> {
        if !self.session.contains_key(CAPPED) {
            return Ok(None);
        }
        self.change(|s| Ok(s.take_capped_note())).await
    }

    /// The state without the store's bookkeeping, and that bookkeeping if the state was loaded
    /// from a server-side store.
    fn snapshot(&self) -> (State, Option<Loaded>) {
        let mut state = self.session.entries().clone();
        let loaded = state
            .remove(LOADED)
            .and_then(|json| serde_json::from_str::<Loaded>(&json).ok())
            .filter(|_| self.session.status() != SessionStatus::Renewed);
        (state, loaded)
    }

    /// Makes `next` the state of this request (and what the middleware sends or saves).
    fn replace(&self, next: State, loaded: Option<Loaded>) {
        let entries = self.session.entries().clone();
        for key in entries.keys() {
            if key != LOADED && !next.contains_key(key) {
                self.session.remove(key);
            }
        }
        for (key, value) in &next {
            if entries.get(key) != Some(value) {
                self.put(key, value);
            }
        }
        if let Some(loaded) = loaded {
            self.put(LOADED, &to_json(&loaded));
        }
    }

    /// Stores an already encoded JSON value as is.
    fn put(&self, key: &str, json: &str) {
        let value = serde_json::value::RawValue::from_string(json.to_owned());
        match value {
            Ok(value) => {
                if let Err(err) = self.session.insert(key, value) {
                    tracing::error!(error = %err, key, "could not store a session value");
                }
            }
            Err(err) => tracing::error!(error = %err, key, "a session value is not JSON"),
        }
    }
}

/// The session state as a change sees it: typed reads and writes over the raw entries.
pub struct Draft<'a>(&'a mut State);

impl Draft<'_> {
    fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.0.get(key).and_then(|v| serde_json::from_str(v).ok())
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<SessionUser> {
        self.get(USER)
    }

    /// The login metadata, if logged in.
    pub fn meta(&self) -> Option<Meta> {
        self.get(META)
    }

    /// The cart as it is now.
    pub fn cart(&self) -> Cart {
        self.get(CART).unwrap_or_default()
    }

    /// Replaces the cart. A session without a login becomes a guest's, whose visit is stamped.
    pub fn set_cart(&mut self, cart: &Cart) {
        self.0.insert(CART.to_owned(), to_json(cart));
        if !self.0.contains_key(USER) && !self.0.contains_key(VISIT) {
            self.touch_visit(crate::domain::now_epoch());
        }
    }

    /// Moves this login into `epoch` (after it ended every other session of its user).
    pub fn set_epoch(&mut self, epoch: i64) {
        if let Some(mut meta) = self.meta() {
            meta.epoch = epoch;
            self.0.insert(META.to_owned(), to_json(&meta));
        }
    }

    /// Labels this login with the device it came from (see `domain::device`).
    pub fn set_device(&mut self, device: &str) {
        if let Some(mut meta) = self.meta() {
            meta.device = device.to_owned();
            self.0.insert(META.to_owned(), to_json(&meta));
        }
    }

    /// Records a guest's activity at `now`; never moves it backwards, and does nothing for a
    /// login or a session that is not a guest's.
    pub fn touch_visit(&mut self, now: i64) {
        if self.0.contains_key(USER) {
            return;
        }
        let last = self.get::<Visit>(VISIT).map_or(i64::MIN, |v| v.last_seen);
        if last < now {
            self.0
                .insert(VISIT.to_owned(), to_json(&Visit { last_seen: now }));
        }
    }

    /// Leaves a message for the next page.
    pub fn set_flash(&mut self, flash: Flash) {
        self.0.insert(FLASH.to_owned(), to_json(&flash));
    }

    /// Takes the message left for this page.
    pub fn take_flash(&mut self) -> Option<Flash> {
        self.0
            .remove(FLASH)
            .and_then(|v| serde_json::from_str(&v).ok())
    }

    /// Leaves the note /account shows once: this login ended older sessions of its user.
    pub fn set_capped_note(&mut self, text: String) {
        self.0.insert(CAPPED.to_owned(), to_json(&text));
    }

    /// Takes the note left by [`Draft::set_capped_note`].
    pub fn take_capped_note(&mut self) -> Option<String> {
        self.0
            .remove(CAPPED)
            .and_then(|v| serde_json::from_str(&v).ok())
    }

    /// Records activity at `now`; never moves it backwards, and does nothing without a login.
    pub fn touch(&mut self, now: i64) {
        if let Some(mut meta) = self.meta()
            && meta.last_seen < now
        {
            meta.last_seen = now;
            self.0.insert(META.to_owned(), to_json(&meta));
        }
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

/// A value encoded the way the session layer stores it.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
