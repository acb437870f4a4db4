//! The outermost middleware: a request id, the request's log span and line, and its HTTP
//! metrics (by matched route pattern, never the raw path).

use std::time::Instant;

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    web,
};
use tracing::Instrument as _;

use crate::{config::Settings, metrics::Metrics};

/// The header a trusted proxy names the request with, echoed on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a proxy: a UUID is 36 characters, a W3C trace id 32.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// One span per request (with its id), one log line when it completes, and its count and
/// latency in the app's metrics. Everything inside runs with the app's metrics current, so the
/// session store and the login code record into this app.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(&req);
    let metrics = req
        .app_data::<web::Data<Metrics>>()
        .map(|m| m.clone().into_inner());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        path = %req.path(),
    );
    let started = Instant::now();
    let call = next.call(req).instrument(span.clone());
    let res = match &metrics {
        Some(metrics) => crate::metrics::scope(std::sync::Arc::clone(metrics), call).await,
        None => call.await,
    };
    let took = started.elapsed();
    let latency_ms = took.as_secs_f64() * 1000.0;
    span.in_scope(|| match &res {
        Ok(res) => tracing::info!(status = res.status().as_u16(), latency_ms, "done"),
        Err(err) => tracing::warn!(error = %err, latency_ms, "failed"),
    });
    match res {
        Ok(mut res) => {
            if let Some(metrics) = &metrics {
                // After routing: the pattern the router matched, whatever spelling of the
                // path got there (`/%6Cogin` counts as `/login`).
                let route = res.request().match_pattern();
                metrics.observe_request(route.as_deref(), &method, res.status().as_u16(), took);
            }
            if let Ok(value) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(REQUEST_ID, value);
            }
            Ok(res)
        }
        Err(err) => {
            if let Some(metrics) = &metrics {
                let status = err.as_response_error().status_code().as_u16();
                metrics.observe_request(None, &method, status, took);
            }
            Err(err)
        }
    }
}

/// The proxy's `X-Request-Id` when the peer is a trusted proxy and the id is short and plain
/// (it goes into logs and a response header); otherwise a fresh random one. A client that is
/// not a trusted proxy cannot choose the id, so it cannot forge log lines or join its requests
/// to someone else's.
fn request_id(req: &ServiceRequest) -> String {
    let trusted_peer = req
        .app_data::<web::Data<Settings>>()
        .is_some_and(|settings| {
            req.peer_addr().is_some_and(|peer| {
                settings
                    .trusted_proxies
                    .iter()
                    .any(|net| net.contains(&peer.ip()))
            })
        });
    if trusted_peer
        && let Some(given) = req.headers().get(REQUEST_ID)
        && let Ok(given) = given.to_str()
        && is_plain_id(given)
    {
        return given.to_owned();
    }
    generate()
}

/// 1 to [`MAX_REQUEST_ID_LEN`] characters of letters, digits, `-`, `_`, `.` and `:`.
fn is_plain_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 128 random bits as 32 hex digits.
fn generate() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_taken() {
        assert!(is_plain_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(is_plain_id("req-1.2:3_x"));
        assert!(!is_plain_id(""));
        assert!(!is_plain_id(&"a".repeat(MAX_REQUEST_ID_LEN + 1)));
        assert!(!is_plain_id("a b"));
        assert!(!is_plain_id("a\"b"));
        assert!(!is_plain_id("é"));
    }

    #[test]
    fn generated_ids_are_plain_and_differ() {
        let (a, b) = (generate(), generate());
        assert!(is_plain_id(&a) && a.len() == 32, "{a}");
        assert_ne!(a, b);
    }
}
