//! Soft state: live-update leases. The server promises to push changes of the products in a
//! cart for a limited time; when the lease ends it forgets the subscriber, which falls back to
//! polling. Leases live only in this process's memory: losing them costs freshness, never
//! correctness.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;

use crate::{
    db::Db,
    domain::{
        catalog::{self, ProductChange},
        snapshot::Catalog,
    },
};

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A product in the cart changed.
    Change(ProductChange),
    /// The lease was ended early (the registry was full and this was the oldest).
    Evicted,
}

/// How often each instance looks for catalog changes made by any instance or tool.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

struct Subscription {
    session: String,
    user_id: i64,
    products: HashSet<i64>,
    expires_at: i64,
    tx: mpsc::Sender<LiveEvent>,
}

#[derive(Default)]
struct Registry {
    subs: HashMap<u64, Subscription>,
    next_id: u64,
}

/// Counters for /metrics.
#[derive(Default)]
pub struct LiveMetrics {
    /// `change` events sent.
    pub events_sent: AtomicU64,
    /// Leases that ended (by time or eviction).
    pub leases_expired: AtomicU64,
}

impl LiveMetrics {
    /// `change` events sent so far.
    pub fn events_sent(&self) -> u64 {
        self.events_sent.load(Ordering::Relaxed)
    }

    /// Leases ended so far.
    pub fn leases_expired(&self) -> u64 {
        self.leases_expired.load(Ordering::Relaxed)
    }
}

/// The bounded registry of live subscriptions of this process.
pub struct LiveHub {
    registry: Mutex<Registry>,
    max_total: usize,
    max_per_user: usize,
    /// Counters for /metrics.
    pub metrics: LiveMetrics,
}

/// A granted lease; dropping it ends the subscription.
pub struct Lease {
    hub: Arc<LiveHub>,
    id: u64,
    /// Events for this subscriber.
    pub events: mpsc::Receiver<LiveEvent>,
    /// When the lease ends, epoch seconds.
    pub expires_at: i64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.hub.end(self.id);
    }
}

impl LiveHub {
    /// A registry of at most `max_total` leases, `max_per_user` per user.
    pub fn new(max_total: usize, max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::default(),
            max_total: max_total.max(1),
            max_per_user: max_per_user.max(1),
            metrics: LiveMetrics::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Grants a lease on `products` until `expires_at`. When a limit is reached, the oldest
    /// lease (of this user first, else of anyone) ends to make room.
    pub fn subscribe(
        self: &Arc<Self>,
        session: &str,
        user_id: i64,
        products: HashSet<i64>,
        expires_at: i64,
    ) -> Lease {
        let (tx, events) = mpsc::channel(64);
        let mut reg = self.lock();
        let mine: Vec<u64> = reg
            .subs
            .iter()
            .filter(|(_, s)| s.user_id == user_id)
            .map(|(id, _)| *id)
            .collect();
        if mine.len() >= self.max_per_user
            && let Some(oldest) = mine.into_iter().min()
        {
            evict(&mut reg, oldest, &self.metrics);
        }
        if reg.subs.len() >= self.max_total
            && let Some(oldest) = reg.subs.keys().min().copied()
        {
            evict(&mut reg, oldest, &self.metrics);
        }
        reg.next_id += 1;
        let id = reg.next_id;
        reg.subs.insert(
            id,
            Subscription {
                session: session.to_owned(),
                user_id,
                products,
                expires_at,
                tx,
            },
        );
        Lease {
            hub: Arc::clone(self),
            id,
            events,
            expires_at,
        }
    }

    fn end(&self, id: u64) {
        if self.lock().subs.remove(&id).is_some() {
            self.metrics.leases_expired.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends every lease now (the server is stopping): each stream says `lease-expired`.
    pub fn end_all(&self) {
        let mut reg = self.lock();
        let ids: Vec<u64> = reg.subs.keys().copied().collect();
        for id in ids {
            evict(&mut reg, id, &self.metrics);
        }
    }

    /// Leases active now.
    pub fn active(&self) -> usize {
        self.lock().subs.len()
    }

    /// When the latest lease of a session ends, if it has one.
    pub fn lease_of(&self, session: &str) -> Option<i64> {
        self.lock()
            .subs
            .values()
            .filter(|s| s.session == session)
            .map(|s| s.expires_at)
            .max()
    }

    /// Sends each change to the subscribers whose cart holds that product.
    pub fn publish(&self, changes: &[ProductChange]) {
        let reg = self.lock();
        for change in changes {
            for sub in reg.subs.values() {
                if sub.products.contains(&change.product_id)
                    && sub.tx.try_send(LiveEvent::Change(change.clone())).is_ok()
                {
                    self.metrics.events_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Polls the catalog for changes by any instance or tool, refreshes this instance's
    /// catalog snapshot and publishes them, forever. Cheap: one indexed query
    /// (`version > last`) per [`POLL_EVERY`], and a full read only when something changed.
    pub async fn watch(self: Arc<Self>, db: Db, snapshot: Arc<Catalog>) {
        let mut last = catalog::current_version(&db).await.unwrap_or_default();
        let mut every = tokio::time::interval(POLL_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match catalog::changes_since(&db, last).await {
                Ok(changes) => {
                    if let Some(newest) = changes.iter().map(|c| c.version).max() {
                        // Pages first, then the pushes that send readers to them; on failure
                        // the next poll tries both again.
                        if let Err(err) = snapshot.refresh().await {
                            tracing::warn!(error = %err, "could not refresh the catalog");
                            continue;
                        }
                        last = newest;
                        self.publish(&changes);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "could not poll catalog changes"),
            }
        }
    }
}

fn evict(reg: &mut Registry, id: u64, metrics: &LiveMetrics) {
    if let Some(sub) = reg.subs.remove(&id) {
        let _ = sub.tx.try_send(LiveEvent::Evicted);
        metrics.leases_expired.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(product_id: i64, version: i64) -> ProductChange {
        ProductChange {
            product_id,
            price_cents: 100,
            stock: 1,
            version,
        }
    }

    #[tokio::test]
    async fn subscribers_get_changes_of_their_products_only() {
        let hub = LiveHub::new(10, 10);
        let mut a = hub.subscribe("s1", 1, HashSet::from([1, 2]), 0);
        let mut b = hub.subscribe("s2", 2, HashSet::from([3]), 0);
        hub.publish(&[change(2, 5), change(3, 6)]);
        assert_eq!(a.events.recv().await, Some(LiveEvent::Change(change(2, 5))));
        assert_eq!(b.events.recv().await, Some(LiveEvent::Change(change(3, 6))));
        assert!(a.events.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_registry_ends_the_oldest_lease_first() {
        let hub = LiveHub::new(2, 10);
        let mut first = hub.subscribe("s1", 1, HashSet::new(), 0);
        let _second = hub.subscribe("s2", 2, HashSet::new(), 0);
        let _third = hub.subscribe("s3", 3, HashSet::new(), 0);
        assert_eq!(first.events.recv().await, Some(LiveEvent::Evicted));
        assert_eq!(hub.active(), 2);
    }

    #[tokio::test]
    async fn a_user_over_their_limit_loses_their_own_oldest_lease() {
        let hub = LiveHub::new(10, 2);
        let mut mine = hub.subscribe("s1", 1, HashSet::new(), 0);
        let mut other = hub.subscribe("s9", 9, HashSet::new(), 0);
        let _two = hub.subscribe("s1", 1, HashSet::new(), 0);
        let _three = hub.subscribe("s1", 1, HashSet::new(), 0);
        assert_eq!(mine.events.recv().await, Some(LiveEvent::Evicted));
        assert!(
            other.events.try_recv().is_err(),
            "another user's lease is untouched"
        );
    }

    #[tokio::test]
    async fn dropping_a_lease_frees_its_place() {
        let hub = LiveHub::new(10, 10);
        let lease = hub.subscribe("s1", 1, HashSet::new(), 42);
        assert_eq!(hub.lease_of("s1"), Some(42));
        drop(lease);
        assert_eq!(hub.active(), 0);
        assert_eq!(hub.lease_of("s1"), None);
    }
}
