//! Soft state in the browser: `GET /cart/live` (Server-Sent Events for one lease),
//! `GET /cart/changes` (the polling fallback) and `GET /metrics`.

use std::{collections::HashSet, convert::Infallible, sync::Arc, time::Duration};

use actix_web::{
    HttpResponse,
    http::header,
    web::{self, Bytes},
};
use serde::{Deserialize, Serialize};

use super::{errors::AppError, guard::LoggedIn, rfc3339};
use crate::{
    config::Settings,
    db::Db,
    domain::{
        catalog::{self, ProductChange},
        now_epoch, secs,
    },
    leases::{Lease, LiveEvent, LiveHub},
};

/// The products in the caller's cart: what a lease or a poll is about.
fn cart_products(me: &LoggedIn) -> HashSet<i64> {
    me.session
        .cart()
        .lines()
        .map(|l| l.product_id.get())
        .collect()
}

/// A comment line keeps proxies from closing an idle stream.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

fn event(name: &str, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

#[derive(Serialize)]
struct LeaseGranted {
    expires_at: Option<String>,
    lease_secs: u64,
    version: i64,
}

#[derive(Serialize)]
struct LeaseExpired {
    poll_after_secs: u64,
    version: i64,
}

enum Phase {
    Start,
    Live,
    Done,
}

struct Stream {
    lease: Lease,
    phase: Phase,
    version: i64,
    lease_secs: u64,
    poll_after_secs: u64,
    deadline: tokio::time::Instant,
    heartbeat: tokio::time::Interval,
}

impl Stream {
    fn expired(&mut self) -> Bytes {
        self.phase = Phase::Done;
        event(
            "lease-expired",
            &LeaseExpired {
                poll_after_secs: self.poll_after_secs,
                version: self.version,
            },
        )
    }

    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        let bytes = match self.phase {
            Phase::Done => return None,
            Phase::Start => {
                self.phase = Phase::Live;
                event(
                    "lease",
                    &LeaseGranted {
                        expires_at: rfc3339(self.lease.expires_at),
                        lease_secs: self.lease_secs,
                        version: self.version,
                    },
                )
            }
            Phase::Live => tokio::select! {
                received = self.lease.events.recv() => match received {
                    Some(LiveEvent::Change(change)) => {
                        self.version = self.version.max(change.version);
                        event("change", &change)
                    }
                    Some(LiveEvent::Evicted) | None => self.expired(),
                },
                () = tokio::time::sleep_until(self.deadline) => self.expired(),
                _ = self.heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
            },
        };
        Some((Ok(bytes), self))
    }
}

/// `GET /cart/live`: grants a lease of `live_lease_secs` on the products in the cart and
/// streams their changes; then `lease-expired`, and the stream ends. A new request is a new
/// lease: leases are never extended silently.
pub async fn stream(
    hub: web::Data<Arc<LiveHub>>,
    db: web::Data<Db>,
    settings: web::Data<Settings>,
    me: LoggedIn,
) -> Result<HttpResponse, AppError> {
    let products = cart_products(&me);
    let session = me.session.meta().map(|m| m.sid).unwrap_or_default();
    let version = catalog::current_version(&db).await?;
    let lease_secs = settings.live_lease.as_secs();
    let lease = hub.subscribe(
        &session,
        me.user.id,
        products,
        now_epoch().saturating_add(secs(settings.live_lease)),
    );
    let start = tokio::time::Instant::now();
    let state = Stream {
        lease,
        phase: Phase::Start,
        version,
        lease_secs,
        poll_after_secs: settings.poll_interval.as_secs(),
        deadline: start + settings.live_lease,
        heartbeat: tokio::time::interval_at(start + HEARTBEAT_EVERY, HEARTBEAT_EVERY),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Ask nginx and friends not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures_util::stream::unfold(state, Stream::next)))
}

/// Query of `/cart/changes`.
#[derive(Deserialize)]
pub struct Since {
    since: Option<String>,
}

#[derive(Serialize)]
struct Changes {
    changes: Vec<ProductChange>,
    version: i64,
    poll_after_secs: u64,
}

/// `GET /cart/changes?since=<version>`: the changes to the cart's products since that
/// version, the version to ask from next, and when to ask.
pub async fn changes(
    db: web::Data<Db>,
    settings: web::Data<Settings>,
    me: LoggedIn,
    query: web::Query<Since>,
) -> Result<HttpResponse, AppError> {
    let since = query
        .since
        .as_deref()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|v| *v >= 0)
        .ok_or_else(|| {
            AppError::BadRequest("`since` must be a version: a whole number, 0 or more.".to_owned())
        })?;
    let products = cart_products(&me);
    // Read the clock first: anything committed after it has a higher version, so the next
    // poll from the returned version cannot miss it.
    let current = catalog::current_version(&db).await?;
    let changes: Vec<ProductChange> = catalog::changes_since(&db, since)
        .await?
        .into_iter()
        .filter(|c| products.contains(&c.product_id))
        .collect();
    let version = changes
        .iter()
        .map(|c| c.version)
        .fold(current.max(since), i64::max);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Changes {
            changes,
            version,
            poll_after_secs: settings.poll_interval.as_secs(),
        }))
}
