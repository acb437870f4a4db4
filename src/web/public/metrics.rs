//! `GET /metrics`: counters of this process in the Prometheus text format (stateless: it
//! describes the process, never the visitor).

use std::sync::{Arc, atomic::Ordering};

use actix_web::{HttpResponse, http::header, web};

use crate::{leases::LiveHub, session::Store};

/// `GET /metrics`: counters of this process, in the Prometheus text format.
pub async fn metrics(hub: web::Data<Arc<LiveHub>>, store: web::Data<Store>) -> HttpResponse {
    let mut body = format!(
        "# HELP statecart_live_leases_active Live-update leases held by this process now.\n\
         # TYPE statecart_live_leases_active gauge\n\
         statecart_live_leases_active {}\n\
         # HELP statecart_live_events_sent_total Change events sent to live subscribers.\n\
         # TYPE statecart_live_events_sent_total counter\n\
         statecart_live_events_sent_total {}\n\
         # HELP statecart_live_leases_expired_total Leases that ended (by time, eviction or disconnect).\n\
         # TYPE statecart_live_leases_expired_total counter\n\
         statecart_live_leases_expired_total {}\n",
        hub.active(),
        hub.metrics.events_sent.load(Ordering::Relaxed),
        hub.metrics.leases_expired.load(Ordering::Relaxed),
    );
    if let Some((held, guests)) = store.memory_sessions().await {
        body.push_str(&format!(
            "# HELP statecart_memory_sessions Sessions the memory backend holds now, guests included.\n\
             # TYPE statecart_memory_sessions gauge\n\
             statecart_memory_sessions {held}\n\
             # HELP statecart_memory_guest_sessions Guest sessions the memory backend holds now.\n\
             # TYPE statecart_memory_guest_sessions gauge\n\
             statecart_memory_guest_sessions {guests}\n"
        ));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}
