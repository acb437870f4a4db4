//! `GET /metrics`: this process's metrics in the Prometheus text format (stateless: it
//! describes the process, never the visitor). The families live in [`crate::metrics`].

use actix_web::{HttpResponse, http::header, web};

use crate::{metrics::Metrics, session::Store};

/// `GET /metrics`: every family of this app, in the Prometheus text format.
pub async fn metrics(metrics: web::Data<Metrics>, store: web::Data<Store>) -> HttpResponse {
    // Counting the memory backend's sessions first frees the expired ones, so the gauge says
    // what the store really holds.
    if let Some((held, guests)) = store.memory_sessions().await {
        metrics.set_memory_sessions(held, guests);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(metrics.render())
}
