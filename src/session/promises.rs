//! What each backend promises: the one place that says it. The README's backend table, the
//! pages (/about, /session), `statecart compare`'s expectations and the test suites all
//! derive from [`SessionBackend::promises`]; a test below checks the README against it.

use crate::config::SessionBackend;

/// What one backend keeps, as yes/no facts, with the words pages show for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promises {
    /// The server (or a store it owns) keeps the state; the cookie holds only a key.
    pub state_on_server: bool,
    /// Login and cart survive a graceful restart.
    pub survives_restart: bool,
    /// Login and cart survive a crash (SIGKILL).
    pub survives_crash: bool,
    /// A login on one instance holds on another sharing the config.
    pub shared_by_instances: bool,
    /// Logout (and revoking other sessions) ends a session on the server: a copied cookie is
    /// worthless afterwards.
    pub revocable: bool,
    /// Changes made by parallel requests of one session are all kept.
    pub parallel_writes_kept: bool,
}

impl SessionBackend {
    /// What this backend promises.
    pub fn promises(self) -> Promises {
        let on_server = self != Self::Cookie;
        let durable = self != Self::Memory;
        Promises {
            state_on_server: on_server,
            survives_restart: durable,
            survives_crash: durable,
            shared_by_instances: durable,
            revocable: on_server,
            parallel_writes_kept: on_server,
        }
    }
}

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

impl Promises {
    /// The cookie backend's promises with `cookie_revocation` on: logout becomes real, at the
    /// cost of that state on the server.
    pub fn with_cookie_revocation(self) -> Self {
        Self {
            revocable: true,
            ..self
        }
    }
}

/// What `backend` promises as configured (`cookie_revocation` changes the cookie backend's).
pub fn promises_as_configured(backend: SessionBackend, cookie_revocation: bool) -> Promises {
    let promises = backend.promises();
    if backend == SessionBackend::Cookie && cookie_revocation {
        promises.with_cookie_revocation()
    } else {
        promises
    }
}

/// The backend table's row for `backend` as configured, in words.
pub fn facts_as_configured(backend: SessionBackend, cookie_revocation: bool) -> BackendFacts {
    let mut words = facts(backend);
    if backend == SessionBackend::Cookie && cookie_revocation {
        words.location = "an encrypted (private) cookie in your browser, plus the ids of \
             logged-out sessions and one epoch per user in the database (cookie_revocation)";
        words.revocation = "yes, with cookie_revocation: a logged-out id or an older epoch is \
             refused, checked on every request";
    }
    words
}

/// The backend table's row for `backend`, in words (the README's table says the same).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's backend table, row by row: `(backend as written, cells)`.
    fn readme_rows() -> Vec<(String, Vec<String>)> {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("| backend | where session state lives |")
            .expect("the README has the backend table");
        readme[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let cells: Vec<String> = l
                    .trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_owned())
                    .collect();
                (cells[0].replace('`', ""), cells)
            })
            .collect()
    }

    fn says_yes(cell: &str) -> bool {
        cell.starts_with("yes")
    }

    #[test]
    fn the_readme_backend_table_states_each_promise() {
        let rows = readme_rows();
        let configs = SessionBackend::ALL
            .into_iter()
            .map(|b| (b.as_str().to_owned(), promises_as_configured(b, false)))
            .chain([(
                "cookie + cookie_revocation".to_owned(),
                promises_as_configured(SessionBackend::Cookie, true),
            )]);
        assert_eq!(rows.len(), SessionBackend::ALL.len() + 1, "{rows:?}");
        for (backend, p) in configs {
            let (_, cells) = rows
                .iter()
                .find(|(name, _)| *name == backend)
                .unwrap_or_else(|| panic!("no README row for {backend}"));
            assert_eq!(says_yes(&cells[2]), p.survives_restart, "{backend} restart");
            assert_eq!(says_yes(&cells[3]), p.survives_crash, "{backend} crash");
            assert_eq!(says_yes(&cells[4]), p.shared_by_instances, "{backend}");
            assert_eq!(says_yes(&cells[5]), p.revocable, "{backend} revocation");
            assert_eq!(
                cells[6].starts_with("none lost"),
                p.parallel_writes_kept,
                "{backend} parallel writes"
            );
        }
    }

    #[test]
    fn the_words_on_the_pages_agree_with_the_promises() {
        for backend in SessionBackend::ALL {
            let (p, words) = (backend.promises(), facts(backend));
            assert_eq!(words.restart.starts_with("yes"), p.survives_restart);
            assert_eq!(words.crash.starts_with("yes"), p.survives_crash);
            assert_eq!(words.instances.starts_with("yes"), p.shared_by_instances);
            assert_eq!(words.revocation.starts_with("yes"), p.revocable);
            assert_eq!(
                words.parallel_writes.starts_with("none lost"),
                p.parallel_writes_kept
            );
            assert_eq!(backend.is_stateful(), p.state_on_server);
        }
        let words = facts_as_configured(SessionBackend::Cookie, true);
        let p = promises_as_configured(SessionBackend::Cookie, true);
        assert!(p.revocable && words.revocation.starts_with("yes"));
    }
}
