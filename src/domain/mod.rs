//! Plain Rust shop logic and its queries: no actix here, so it is tested directly.

pub mod accounts;
pub mod cart;
pub mod catalog;
pub mod orders;
pub mod snapshot;

/// Seconds since the Unix epoch, the time unit stored in the database.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
