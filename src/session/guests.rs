//! Bounds on guest sessions for the backends that keep server state: new guests per client
//! address per minute, and (database, Redis) how many guests the store holds at once.
//!
//! A guest gets state on its first write, with no account behind it, so without a bound
//! anyone can fill the sessions table or Redis with anonymous carts. Only the *creation* of a
//! guest session is counted: a guest who already has a cart, and every login, keep working.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};

use super::Store;

/// The client's address as the rate limits count it, put into the request by the web layer
/// (which knows the trusted proxies) for the session layer to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// Why a new guest session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRefusal {
    /// This address started as many guest sessions as it may this minute.
    TooManyFromAddress {
        /// Seconds until one more is allowed.
        retry_after_secs: u64,
    },
    /// The store holds as many guest sessions as `max_guest_sessions` allows.
    StoreFull,
}

/// How long a count of the store's guests is trusted before it is read again. Within it,
/// guests admitted by this process are added to the count, so a burst cannot slip past.
const CENSUS_FRESH_FOR: Duration = Duration::from_secs(1);

/// Admits or refuses new guest sessions. Built once and shared by all workers.
pub struct GuestGate {
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    census: Option<Census>,
}

/// The store's guest count against its bound.
struct Census {
    store: Store,
    max: u64,
    /// When the count was last read from the store, and the count since (plus admissions).
    counted: Mutex<Option<(Instant, u64)>>,
}

impl GuestGate {
    /// `per_minute` new guests per address (0: no limit); `max_held` guests in `store` at
    /// once, for the stores that can count them (database, Redis).
    pub fn new(per_minute: u32, store: &Store, max_held: u64) -> Self {
        Self {
            per_address: NonZeroU32::new(per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            census: store.counts_guests().then(|| Census {
                store: store.clone(),
                max: max_held,
                counted: Mutex::new(None),
            }),
        }
    }

    /// Admits one new guest session from `address` (`None`: not a TCP peer, not limited by
    /// address), or says why not.
    pub async fn admit(&self, address: Option<IpAddr>) -> Result<(), GuestRefusal> {
        if let Some(census) = &self.census
            && !census.has_room().await
        {
            return Err(GuestRefusal::StoreFull);
        }
        if let (Some(limiter), Some(address)) = (&self.per_address, address) {
            limiter.check_key(&address).map_err(|not_until| {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                GuestRefusal::TooManyFromAddress {
                    retry_after_secs: wait.as_secs() + 1,
                }
            })?;
        }
        if let Some(census) = &self.census {
            census.admitted();
        }
        Ok(())
    }

    /// Drops per-address counts that no longer limit anyone (run in the background).
    pub fn housekeeping(&self) {
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
        }
    }
}

impl Census {
    /// Whether one more guest fits. A store that does not answer admits: the save that
    /// follows will meet the same outage and answer 503 itself.
    async fn has_room(&self) -> bool {
        let cached = *self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = match cached {
            Some((at, count)) if at.elapsed() < CENSUS_FRESH_FOR => count,
            _ => match self.store.guest_count().await {
                Ok(count) => {
                    *self
                        .counted
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((Instant::now(), count));
                    count
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not count guest sessions");
                    return true;
                }
            },
        };
        count < self.max
    }

    fn admitted(&self) {
        if let Some((_, count)) = self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            *count = count.saturating_add(1);
        }
    }
}
