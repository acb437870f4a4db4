//! The catalog as soft state in memory: each instance keeps a snapshot of every product (price,
//! stock) and the catalog version it was read at, and replaces it when the catalog clock moves.
//!
//! Pages and cart checks read the snapshot instead of the database: the catalog is small, read
//! on nearly every request and changed rarely. How fresh it is: this instance's own changes
//! (checkout, the admin page) replace it before their response is sent; changes made by another
//! instance or by `statecart admin` are seen within one poll of the catalog watcher (about a
//! second). Checkout still takes stock inside a database transaction, so a stale snapshot can
//! show a wrong number for a second, but can never sell what is not there.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use super::catalog::{self, Product, ProductId};
use crate::db::Db;

/// The catalog at one version.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The catalog clock when the products were read (products may be a little newer).
    pub version: i64,
    /// Every product, by id.
    pub products: Vec<Product>,
    index: HashMap<i64, usize>,
}

impl Snapshot {
    fn new(version: i64, products: Vec<Product>) -> Self {
        let index = products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id, i))
            .collect();
        Self {
            version,
            products,
            index,
        }
    }

    /// One product, if the snapshot has it.
    pub fn get(&self, id: ProductId) -> Option<&Product> {
        self.index.get(&id.get()).map(|&i| &self.products[i])
    }
}

/// The current snapshot, shared by every worker of this instance.
pub struct Catalog {
    db: Db,
    current: RwLock<Arc<Snapshot>>,
    /// Snapshots made current so far (for /metrics).
    rebuilds: AtomicU64,
}

impl Catalog {
    /// Reads the whole catalog once.
    pub async fn load(db: Db) -> Result<Arc<Self>, sqlx::Error> {
        let catalog = Arc::new(Self {
            db,
            current: RwLock::new(Arc::default()),
            rebuilds: AtomicU64::new(0),
        });
        catalog.refresh().await?;
        Ok(catalog)
    }

    /// The snapshot now: a pointer copy, no database.
    pub fn now(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the catalog again and makes it current. The version is read before the products,
    /// so a change committed in between is newer than the snapshot says and the watcher's next
    /// poll reads it again; of two refreshes racing, the older never replaces the newer.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let version = catalog::current_version(&self.db).await?;
        let products = catalog::list(&self.db).await?;
        let fresh = Arc::new(Snapshot::new(version, products));
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if fresh.version >= current.version {
            *current = fresh;
            self.rebuilds.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// How many snapshots were made current, the first one at start included.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }
}
