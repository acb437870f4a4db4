//! Measures what an idle session costs the `memory` backend, from the process's resident set
//! size (RSS), not from a formula: fills a real `MemoryStore` with logged-in sessions that each
//! hold a 3-line cart, and reports the RSS growth per session.
//!
//! ```sh
//! cargo run --release --example memory_footprint -- 10000 100000
//! ```

use std::time::Duration;

use statecart::session::{
    memory::MemoryStore,
    state::{CART, META, State, USER},
};

/// Resident set size of this process now, in bytes (Linux `/proc/self/status`).
fn rss_bytes() -> Option<u64> {
    statecart::sandbox::rss_bytes_of("self")
}

/// The state of a logged-in session with a 3-line cart, as the app stores it.
fn session_state(n: u64) -> State {
    State::from([
        (USER.to_owned(), format!(r#"{{"id":{n},"name":"user{n}"}}"#)),
        (
            META.to_owned(),
            format!(r#"{{"sid":"{n:024}","issued_at":1796000000,"last_seen":1796000000}}"#),
        ),
        (
            CART.to_owned(),
            r#"{"r":3,"l":[[1,1],[2,2],[5,1]]}"#.to_owned(),
        ),
    ])
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let counts: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let counts = if counts.is_empty() {
        vec![10_000, 100_000]
    } else {
        counts
    };
    println!("| idle sessions | RSS growth | bytes per session |");
    println!("|---|---|---|");
    for count in counts {
        let store = MemoryStore::new(count.saturating_mul(2), Duration::from_secs(3600));
        store.run_housekeeping().await;
        let before = rss_bytes().unwrap_or_default();
        for n in 0..count {
            store.save(session_state(n)).await;
        }
        store.run_housekeeping().await;
        let after = rss_bytes().unwrap_or_default();
        let growth = after.saturating_sub(before);
        println!(
            "| {count} | {:.1} MiB | {} |",
            growth as f64 / (1024.0 * 1024.0),
            growth / count.max(1)
        );
        assert_eq!(store.len(), count, "every session is held");
    }
}
