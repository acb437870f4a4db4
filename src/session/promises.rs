//! What each backend promises, in the words of the README's backend table (shown on /about,
//! /session and checked by the tests).

use crate::config::SessionBackend;

/// What one backend promises, in the words of the README's backend table (shown on /about and
/// /session).
#[derive(Debug, Clone, Copy)]
pub struct BackendFacts {
    /// Where session and cart live.
    pub location: &'static str,
    /// Whether state survives a graceful restart.
    pub restart: &'static str,
    /// Whether state survives a crash (SIGKILL).
    pub crash: &'static str,
    /// Whether several instances can share it.
    pub instances: &'static str,
    /// Whether logout revokes on the server.
    pub revocation: &'static str,
    /// What happens to changes that requests of one session make at the same moment.
    pub parallel_writes: &'static str,
}

/// Server-side stores save each change onto the state it was made from, or make it again.
const NONE_LOST: &str = "none lost: each change is saved onto the state it was made from, \
     or made again on the newer one";

/// The backend table's row for `backend`.
pub fn facts(backend: SessionBackend) -> BackendFacts {
    match backend {
        SessionBackend::Cookie => BackendFacts {
            location: "an encrypted (private) cookie in your browser; the server is stateless",
            restart: "yes, while the session key is kept",
            crash: "yes: there is nothing on the server to lose",
            instances: "yes, when every instance shares the session key",
            revocation: "no: an old cookie replays until it expires",
            parallel_writes: "the last one wins: each answer carries a whole new cookie, and the \
                 browser keeps whichever arrives last",
        },
        SessionBackend::Memory => BackendFacts {
            location: "this process's memory, bounded, with idle expiry",
            restart: "no",
            crash: "no",
            instances: "no: each instance has its own memory (needs sticky routing)",
            revocation: "yes",
            parallel_writes: NONE_LOST,
        },
        SessionBackend::Database => BackendFacts {
            location: "the sessions table of the app database",
            restart: "yes",
            crash: "yes, every committed write",
            instances: "yes on PostgreSQL; on SQLite, instances on one host sharing the file",
            revocation: "yes",
            parallel_writes: NONE_LOST,
        },
        SessionBackend::Redis => BackendFacts {
            location: "Redis keys with a time-to-live",
            restart: "yes, if Redis keeps its data",
            crash: "yes",
            instances: "yes",
            revocation: "yes",
            parallel_writes: NONE_LOST,
        },
    }
}
