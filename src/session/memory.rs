//! The `memory` backend: sessions in this process, bounded, with idle expiry (moka). Guests
//! (sessions without a login) live in a cache of their own with its own bound and idle
//! timeout, so however many guests come, they never push a logged-in session out.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use moka::{future::Cache, notification::RemovalCause, ops::compute::Op};

use super::{
    SessionSummary,
    state::{self, State},
};
use crate::domain::{now_epoch, secs};

/// A session's state as one compact JSON string: a single allocation instead of a map of
/// small strings (measured: about a third of an idle session's memory).
struct Packed(Box<str>);

impl Packed {
    fn of(state: &State) -> Self {
        Self(
            serde_json::to_string(state)
                .unwrap_or_default()
                .into_boxed_str(),
        )
    }

    fn unpack(&self) -> State {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

struct Entry {
    state: Packed,
    user_id: Option<i64>,
    created_at: i64,
    /// Grows with every save, so a change can be saved only onto the state it was made from.
    version: u64,
}

type UserIndex = Arc<Mutex<HashMap<i64, HashSet<String>>>>;

/// Sessions in a concurrent cache shared by every worker. Lost on restart, by design.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Arc<Entry>>,
    /// Sessions without a login.
    guests: Cache<String, Arc<Entry>>,
    /// user id -> session keys, so /account can list and revoke without scanning.
    by_user: UserIndex,
}

impl MemoryStore {
    /// A store of at most `capacity` logged-in sessions, each dropped after `idle` without use,
    /// and as many guests on the same terms (see [`MemoryStore::with_guests`]).
    pub fn new(capacity: u64, idle: Duration) -> Self {
        let by_user: UserIndex = Arc::default();
        let index = Arc::clone(&by_user);
        let cache = Cache::builder()
            .max_capacity(capacity)
            .time_to_idle(idle)
            .eviction_listener(move |key: Arc<String>, entry: Arc<Entry>, cause| {
                // A replaced entry keeps its key; everything else leaves the index too.
                if cause != RemovalCause::Replaced
                    && let Some(user_id) = entry.user_id
                {
                    unindex(&index, user_id, &key);
                }
            })
            .build();
        Self {
            cache,
            guests: guest_cache(capacity, idle),
            by_user,
        }
    }

    /// The same store with at most `capacity` guest sessions, each dropped after `idle`.
    pub fn with_guests(mut self, capacity: u64, idle: Duration) -> Self {
        self.guests = guest_cache(capacity, idle);
        self
    }

    /// The cache a new session with this state goes to.
    fn cache_for(&self, state: &State) -> &Cache<String, Arc<Entry>> {
        if state::user_id_of(state).is_some() {
            &self.cache
        } else {
            &self.guests
        }
    }

    /// The cache that holds `key`, if either does.
    fn cache_of(&self, key: &str) -> &Cache<String, Arc<Entry>> {
        if self.guests.contains_key(key) {
            &self.guests
        } else {
            &self.cache
        }
    }

    fn index(&self, user_id: Option<i64>, key: &str) {
        if let Some(user_id) = user_id {
            self.by_user
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(user_id)
                .or_default()
                .insert(key.to_owned());
        }
    }

    /// The state of a live session.
    pub async fn load(&self, key: &str) -> Option<State> {
        self.load_versioned(key).await.map(|(state, _)| state)
    }

    async fn entry(&self, key: &str) -> Option<Arc<Entry>> {
        match self.cache.get(key).await {
            Some(entry) => Some(entry),
            None => self.guests.get(key).await,
        }
    }

    /// The state of a live session and its version.
    pub async fn load_versioned(&self, key: &str) -> Option<(State, u64)> {
        self.entry(key).await.map(|e| (e.state.unpack(), e.version))
    }

    /// Saves `state` only if the session is still at version `expected` (an empty state ends
    /// the session); returns the new version, or `None` when the session changed or ended
    /// meanwhile. The check and the write happen under the cache's per-entry lock.
    pub async fn swap(&self, key: &str, expected: u64, state: &State) -> Option<u64> {
        let user_id = state::user_id_of(state);
        let result = self
            .cache_of(key)
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let op = match current {
                    Some(current) if current.value().version == expected => {
                        if state.is_empty() {
                            Op::Remove
                        } else {
                            Op::Put(Arc::new(Entry {
                                state: Packed::of(state),
                                user_id,
                                created_at: current.value().created_at,
                                version: expected + 1,
                            }))
                        }
                    }
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        match result {
            moka::ops::compute::CompResult::ReplacedWith(_) => {
                self.index(user_id, key);
                Some(expected + 1)
            }
            moka::ops::compute::CompResult::Removed(_) => Some(expected + 1),
            _ => None,
        }
    }

    /// Stores a new session under a fresh key (retrying the astronomically rare collision).
    pub async fn save(&self, state: State) -> String {
        let user_id = state::user_id_of(&state);
        let cache = self.cache_for(&state);
        let entry = Arc::new(Entry {
            state: Packed::of(&state),
            user_id,
            created_at: now_epoch(),
            version: 0,
        });
        loop {
            let key = state::random_key();
            let inserted = cache.entry(key.clone()).or_insert(Arc::clone(&entry)).await;
            if inserted.is_fresh() {
                self.index(user_id, &key);
                return key;
            }
        }
    }

    /// Replaces the state of a live session whatever its version; a session deleted meanwhile
    /// stays deleted.
    pub async fn update(&self, key: &str, state: State) {
        let user_id = state::user_id_of(&state);
        let result = self
            .cache_of(key)
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let op = match current {
                    None => Op::Nop,
                    Some(current) => Op::Put(Arc::new(Entry {
                        state: Packed::of(&state),
                        user_id,
                        created_at: current.value().created_at,
                        version: current.value().version + 1,
                    })),
                };
                std::future::ready(op)
            })
            .await;
        if matches!(result, moka::ops::compute::CompResult::ReplacedWith(_)) {
            self.index(user_id, key);
        }
    }

    /// Forgets a session.
    pub async fn delete(&self, key: &str) {
        self.cache.invalidate(key).await;
        self.guests.invalidate(key).await;
    }

    /// The keys the index holds for a user (some may have just expired).
    fn keys_of(&self, user_id: i64) -> Vec<String> {
        self.by_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user_id)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The live sessions of a user. Reading an entry counts as using it for moka's idle
    /// timer, so a session idle by its own clock is ended here: listing must not keep the
    /// other sessions of an active user alive.
    pub async fn sessions_of(&self, user_id: i64) -> Vec<SessionSummary> {
        let keys = self.keys_of(user_id);
        let idle = self.cache.policy().time_to_idle().map_or(i64::MAX, secs);
        let now = now_epoch();
        let mut sessions = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(entry) = self.cache.get(&key).await else {
                continue;
            };
            let Some(meta) = state::meta_of(&entry.state.unpack()) else {
                continue;
            };
            if now.saturating_sub(meta.last_seen) >= idle {
                self.cache.invalidate(&key).await;
            } else {
                sessions.push(SessionSummary {
                    sid: meta.sid,
                    created_at: entry.created_at,
                    last_seen_at: meta.last_seen,
                    device: meta.device,
                });
            }
        }
        sessions
    }

    /// Deletes every session of a user except the one whose id is `keep_sid`.
    pub async fn revoke_others(&self, user_id: i64, keep_sid: &str) -> u64 {
        let mut revoked = 0;
        for key in self.keys_of(user_id) {
            let Some(entry) = self.cache.get(&key).await else {
                continue;
            };
            if state::meta_of(&entry.state.unpack()).is_some_and(|m| m.sid != keep_sid) {
                self.cache.invalidate(&key).await;
                revoked += 1;
            }
        }
        revoked
    }

    /// Deletes the session of `user_id` whose id is `sid`; whether there was one. Another
    /// user's session is never found: only that user's own index is searched.
    pub async fn revoke(&self, user_id: i64, sid: &str) -> bool {
        for key in self.keys_of(user_id) {
            let Some(entry) = self.cache.get(&key).await else {
                continue;
            };
            if state::meta_of(&entry.state.unpack()).is_some_and(|m| m.sid == sid) {
                self.cache.invalidate(&key).await;
                return true;
            }
        }
        false
    }

    /// Frees expired and evicted entries now (moka otherwise does it lazily).
    pub async fn run_housekeeping(&self) {
        self.cache.run_pending_tasks().await;
        self.guests.run_pending_tasks().await;
    }

    /// Sessions held right now, guests included.
    pub fn len(&self) -> u64 {
        self.cache.entry_count() + self.guests.entry_count()
    }

    /// Guest sessions held right now.
    pub fn guests(&self) -> u64 {
        self.guests.entry_count()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn guest_cache(capacity: u64, idle: Duration) -> Cache<String, Arc<Entry>> {
    Cache::builder()
        .max_capacity(capacity)
        .time_to_idle(idle)
        .build()
}

fn unindex(index: &UserIndex, user_id: i64, key: &str) {
    let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(keys) = index.get_mut(&user_id) {
        keys.remove(key);
        if keys.is_empty() {
            index.remove(&user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::state::{META, USER};

    /// A login last seen now.
    fn login_state(user_id: i64, sid: &str) -> State {
        login_state_seen(user_id, sid, now_epoch())
    }

    fn login_state_seen(user_id: i64, sid: &str, last_seen: i64) -> State {
        State::from([
            (
                USER.to_owned(),
                format!(r#"{{"id":{user_id},"name":"u{user_id}"}}"#),
            ),
            (
                META.to_owned(),
                format!(r#"{{"sid":"{sid}","issued_at":1,"last_seen":{last_seen}}}"#),
            ),
        ])
    }

    #[tokio::test]
    async fn an_update_after_delete_does_not_bring_the_session_back() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let key = store.save(login_state(1, "a")).await;
        store.delete(&key).await;
        store.update(&key, login_state(1, "a")).await;
        assert_eq!(store.load(&key).await, None);
    }

    #[tokio::test]
    async fn a_swap_saves_only_onto_the_version_it_was_made_from() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let key = store.save(login_state(1, "a")).await;
        let (state, v0) = store.load_versioned(&key).await.expect("live");
        assert_eq!(
            store.swap(&key, v0, &login_state(1, "b")).await,
            Some(v0 + 1)
        );
        assert_eq!(
            store.swap(&key, v0, &state).await,
            None,
            "a stale version loses"
        );
        let (now, _) = store.load_versioned(&key).await.expect("live");
        assert_eq!(now, login_state(1, "b"));
        store.delete(&key).await;
        assert_eq!(
            store.swap(&key, v0 + 1, &state).await,
            None,
            "never re-created"
        );
        assert_eq!(store.load(&key).await, None);
    }

    #[tokio::test]
    async fn idle_sessions_expire_and_are_freed() {
        let store = MemoryStore::new(100, Duration::from_millis(200));
        let key = store.save(login_state(1, "a")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.load(&key).await, None);
        store.run_housekeeping().await;
        assert!(
            store.is_empty(),
            "expired entries are freed, not just hidden"
        );
        assert!(store.sessions_of(1).await.is_empty());
    }

    #[tokio::test]
    async fn capacity_is_bounded() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        for i in 0..50 {
            store.save(login_state(i, "s")).await;
        }
        store.run_housekeeping().await;
        assert!(store.len() <= 10, "{} sessions held", store.len());
    }

    #[tokio::test]
    async fn guests_never_push_out_logged_in_sessions() {
        let store =
            MemoryStore::new(10, Duration::from_secs(60)).with_guests(10, Duration::from_secs(60));
        let user = store.save(login_state(1, "a")).await;
        for n in 0..200 {
            let guest = State::from([(
                crate::session::state::CART.to_owned(),
                format!(r#"{{"r":1,"l":[[{n},1]]}}"#),
            )]);
            store.save(guest).await;
        }
        store.run_housekeeping().await;
        assert!(store.load(&user).await.is_some(), "the login is kept");
        assert!(store.guests() <= 10, "{} guests held", store.guests());
    }

    #[tokio::test]
    async fn listing_ends_a_session_idle_by_its_own_clock_instead_of_keeping_it() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let active = store.save(login_state(3, "active")).await;
        // Last seen at epoch second 1: long past the 60 s idle timeout.
        let stale = store.save(login_state_seen(3, "stale", 1)).await;
        let listed: Vec<String> = store
            .sessions_of(3)
            .await
            .into_iter()
            .map(|s| s.sid)
            .collect();
        assert_eq!(listed, ["active"]);
        assert!(store.load(&active).await.is_some());
        assert!(store.load(&stale).await.is_none(), "the idle one is gone");
    }

    #[tokio::test]
    async fn revoking_others_keeps_only_the_named_session() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let keep = store.save(login_state(7, "keep")).await;
        let other = store.save(login_state(7, "other")).await;
        let stranger = store.save(login_state(8, "x")).await;
        assert_eq!(store.sessions_of(7).await.len(), 2);
        assert_eq!(store.revoke_others(7, "keep").await, 1);
        assert!(store.load(&keep).await.is_some());
        assert!(store.load(&other).await.is_none());
        assert!(store.load(&stranger).await.is_some());
    }

    #[tokio::test]
    async fn revoking_one_ends_that_session_of_that_user_only() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let phone = store.save(login_state(7, "phone")).await;
        let laptop = store.save(login_state(7, "laptop")).await;
        let strangers = store.save(login_state(8, "phone2")).await;
        assert!(
            !store.revoke(8, "phone").await,
            "another user's id is not found"
        );
        assert!(store.load(&phone).await.is_some());
        assert!(store.revoke(7, "phone").await);
        assert!(!store.revoke(7, "phone").await, "gone once");
        assert!(store.load(&phone).await.is_none());
        assert!(store.load(&laptop).await.is_some());
        assert!(store.load(&strangers).await.is_some());
    }
}
