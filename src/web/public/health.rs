//! `GET /healthz`: whether this instance can serve, for balancers and people.

use actix_web::{HttpResponse, http::header, web};

use crate::{db::Db, session::Store, web::errors};

/// `GET /healthz`: 200 when the database and the session store answer, else 503 naming what
/// is down.
pub async fn healthz(db: web::Data<Db>, store: web::Data<Store>) -> HttpResponse {
    let (database, sessions) = futures_util::future::join(db.ping(), store.ping()).await;
    let word = |up: bool| if up { "ok" } else { "down" };
    let body = serde_json::json!({
        "status": if database && sessions { "ok" } else { "unavailable" },
        "database": word(database),
        "session_store": word(sessions),
    });
    let mut res = if database && sessions {
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
