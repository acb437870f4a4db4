//! The stateless half: public handlers that cannot see a session, mounted outside the session
//! middleware, so the tree itself shows which handlers may keep state. Pages and JSON are
//! cacheable; assets are content-versioned; health and metrics describe the process.

pub mod assets;
pub mod compare;
pub mod health;
pub mod metrics;
pub mod pages;
