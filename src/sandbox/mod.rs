//! The real `statecart serve`, out of process, on resources of its own: the one harness of
//! `statecart compare` and of the tests that need the binary (restart, crash, two instances).
//!
//! - [`Instance`]: starts a given binary with exactly the given `STATECART_*` settings, waits
//!   for the address it logs, and stops it with a [`Signal`] (or kills it when dropped).
//! - [`PgDatabase`]: a fresh PostgreSQL database with a unique name, dropped again.
//! - [`RedisPrefix`]: a Redis key prefix no other run uses; its keys are deleted with `SCAN`.
//! - [`RedisCluster`]: a private Redis Cluster from `redis-server` on free loopback ports,
//!   torn down when dropped (or when this process ends).
//!
//! Removal is explicit and async (`drop_database`, `delete_keys`): a caller that must clean
//! up in `Drop` runs it on a thread of its own.

mod cluster;
mod process;
mod services;

pub use cluster::{ClusterShape, RedisCluster, node_url};
pub use process::{Instance, Signal, command, rss_bytes_of};
pub use services::{PgDatabase, RedisPrefix, ping_postgres, ping_redis};
