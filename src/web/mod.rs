//! HTTP handlers grouped by page family, plus what every page shares.

pub mod assets;
pub mod errors;
pub mod http;
pub mod pages;

use crate::config::SessionBackend;

/// Facts about the running app that every page shows (app data, one per server).
#[derive(Debug, Clone)]
pub struct Site {
    /// Instance name for the footer and `X-Statecart-Instance`.
    pub instance: String,
    /// The configured session backend.
    pub backend: SessionBackend,
    /// Content hash that versions asset URLs, so assets may be cached forever.
    pub asset_version: &'static str,
}

impl Site {
    /// "stateful" or "stateless", for the footer.
    pub fn mode(&self) -> &'static str {
        if self.backend.is_stateful() {
            "stateful"
        } else {
            "stateless"
        }
    }
}

/// What the header knows about the visitor.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    /// False on stateless pages: they cannot see the session, so they do not pretend to.
    pub knows_visitor: bool,
    /// The logged-in user's name.
    pub user: Option<String>,
    /// Lines in the cart, where known.
    pub cart_lines: Option<usize>,
    /// Which top-level link to highlight.
    pub active: &'static str,
}

impl Nav {
    /// The header of a stateless page.
    pub fn stateless(active: &'static str) -> Self {
        Self {
            active,
            ..Self::default()
        }
    }
}
