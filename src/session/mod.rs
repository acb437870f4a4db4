//! Session state: which backend holds it and what that choice means.

use crate::config::SessionBackend;

/// What one backend promises, in the words of the design table (shown on /about and /session).
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
}

/// The design table row for `backend`.
pub fn facts(backend: SessionBackend) -> BackendFacts {
    match backend {
        SessionBackend::Cookie => BackendFacts {
            location: "an encrypted (private) cookie in your browser; the server is stateless",
            restart: "yes, while the session key is kept",
            crash: "yes: there is nothing on the server to lose",
            instances: "yes, when every instance shares the session key",
            revocation: "no: an old cookie replays until it expires",
        },
        SessionBackend::Memory => BackendFacts {
            location: "this process's memory, bounded, with idle expiry",
            restart: "no",
            crash: "no",
            instances: "no: each instance has its own memory (needs sticky routing)",
            revocation: "yes",
        },
        SessionBackend::Database => BackendFacts {
            location: "the sessions table of the app database",
            restart: "yes",
            crash: "yes, every committed write",
            instances: "yes on PostgreSQL; on SQLite, instances on one host sharing the file",
            revocation: "yes",
        },
        SessionBackend::Redis => BackendFacts {
            location: "Redis keys with a time-to-live",
            restart: "yes, if Redis keeps its data",
            crash: "yes",
            instances: "yes",
            revocation: "yes",
        },
    }
}
