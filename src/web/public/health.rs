//! `GET /healthz`: whether this instance can serve, for balancers and people.

use actix_web::{HttpResponse, http::header, web};

use crate::{
    db::Db,
    lifecycle::{Lifecycle, Phase},
    session::Store,
    web::errors,
};

/// `GET /healthz`: 200 only when this instance is ready (the database, the session store and
/// the catalog snapshot answered at start) and not draining, and the database and the session
/// store answer now; else 503 whose `status` says why (`starting`, `draining`, `unavailable`)
/// and which service is down.
pub async fn healthz(
    db: web::Data<Db>,
    store: web::Data<Store>,
    lifecycle: web::Data<Lifecycle>,
) -> HttpResponse {
    let (database, sessions) = futures_util::future::join(db.ping(), store.ping()).await;
    let word = |up: bool| if up { "ok" } else { "down" };
    let status = match lifecycle.phase() {
        Phase::Ready if database && sessions => "ok",
        Phase::Ready => "unavailable",
        phase => phase.as_str(),
    };
    let body = serde_json::json!({
        "status": status,
        "database": word(database),
        "session_store": word(sessions),
    });
    let mut res = if status == "ok" {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, errors::RETRY_AFTER_SECS.to_string()))
            .json(body)
    };
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}
