//! Where this instance is in its life (starting, ready, draining), shared by the start-up, the
//! signal handler, `/healthz` and the middleware that closes connections while draining.
//!
//! A balancer can only move traffic away from an instance that says it is leaving before it
//! stops accepting, and only send traffic to one that says it is ready once it can serve
//! without a 503. The phase is that saying; [`close_while_draining`] makes clients with
//! kept-alive connections open new ones, which the balancer then sends elsewhere.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::ConnectionType,
    middleware::Next,
    web,
};

/// A phase of the instance's life, as `/healthz` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Listening, but the database or the session store has not answered yet.
    Starting,
    /// The database, the session store and the catalog snapshot have answered once.
    Ready,
    /// A stop was asked for: still serving, but telling balancers and clients to go elsewhere.
    Draining,
}

impl Phase {
    /// The word `/healthz` and the log use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Starting,
            1 => Self::Ready,
            _ => Self::Draining,
        }
    }
}

/// The phase of this instance, shared by every worker (cheap to clone). It only moves forward:
/// starting, ready, draining; a drain that begins while starting stays a drain.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle(Arc<AtomicU8>);

impl Lifecycle {
    /// The phase now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.0.load(Ordering::Acquire))
    }

    /// Whether a stop was asked for.
    pub fn is_draining(&self) -> bool {
        self.phase() == Phase::Draining
    }

    /// Starting -> ready; `false` (and nothing changes) when not starting any more.
    pub fn mark_ready(&self) -> bool {
        self.advance_to(Phase::Ready)
    }

    /// -> draining; `false` when already draining.
    pub fn begin_drain(&self) -> bool {
        self.advance_to(Phase::Draining)
    }

    fn advance_to(&self, phase: Phase) -> bool {
        let to = phase as u8;
        self.0.fetch_max(to, Ordering::AcqRel) < to
    }
}

/// While draining, every response closes its connection (`Connection: close`), error pages
/// included: a client must not send its next request down a connection that is about to go
/// away, where it could be lost unanswered.
pub async fn close_while_draining(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let lifecycle = req.app_data::<web::Data<Lifecycle>>().cloned();
    let result = next.call(req).await;
    // Read after the handler: a request in flight when the drain begins closes too.
    if !lifecycle.is_some_and(|l| l.is_draining()) {
        return result;
    }
    match result {
        Ok(mut res) => {
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            Ok(res)
        }
        // A middleware failed: its error carries the page; close after that one too.
        Err(err) => {
            let mut page = err.error_response();
            page.head_mut().set_connection_type(ConnectionType::Close);
            Err(actix_web::error::InternalError::from_response(err.to_string(), page).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_only_moves_forward() {
        let life = Lifecycle::default();
        assert_eq!(life.phase(), Phase::Starting);
        assert!(life.mark_ready());
        assert!(!life.mark_ready(), "ready once");
        assert!(life.begin_drain());
        assert!(!life.mark_ready(), "a drain is never undone");
        assert!(!life.begin_drain(), "drains once");
        assert_eq!(life.phase(), Phase::Draining);
    }

    #[test]
    fn a_drain_while_starting_stays_a_drain() {
        let life = Lifecycle::default();
        assert!(life.begin_drain());
        assert!(!life.mark_ready());
        assert!(life.is_draining());
    }
}
