//! Response helpers: cacheable public responses (strong ETags, 304), redirects, safe `next` paths.

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, ContentType},
};
use sha2::{Digest, Sha256};

/// Seconds a public page may be reused before revalidating; the ETag makes that cheap.
pub const PAGE_MAX_AGE: u32 = 30;

/// A strong ETag: the first 128 bits of the body's SHA-256, quoted.
pub fn etag_of(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    let mut etag = String::with_capacity(34);
    etag.push('"');
    for byte in &digest[..16] {
        etag.push(char::from(HEX[usize::from(byte >> 4)]));
        etag.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    etag.push('"');
    etag
}

/// Whether the request's `If-None-Match` names `etag` (or `*`).
pub fn matches_if_none_match(req: &HttpRequest, etag: impl AsRef<[u8]>) -> bool {
    let etag = etag.as_ref();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag.as_bytes() == etag || tag == "*")
}

/// A public, cacheable 200 (or 304 when the client already holds this body).
pub fn cacheable(
    req: &HttpRequest,
    content_type: ContentType,
    body: impl Into<Vec<u8>>,
    cache_control: &str,
) -> HttpResponse {
    let body = body.into();
    let etag = etag_of(&body);
    if matches_if_none_match(req, etag.as_bytes()) {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, cache_control.to_owned()))
            .finish();
    }
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache_control.to_owned()))
        .body(body)
}

/// `Cache-Control` for public pages and JSON.
pub fn public_page_cache_control() -> String {
    format!("public, max-age={PAGE_MAX_AGE}")
}

/// A 303 redirect to a local path.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.to_owned()))
        .finish()
}

/// `/login?next=<path>`.
pub fn login_url(next: &str) -> String {
    match serde_urlencoded::to_string([("next", next)]) {
        Ok(query) if next != "/" => format!("/login?{query}"),
        _ => "/login".to_owned(),
    }
}

/// `next` if it is a local path (`/...` but not `//...`, no scheme, no backslash, no control
/// characters), else `/`: login never redirects off-site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(char::is_control)
                && path.len() <= 2048 =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_safe_next_targets() {
        assert_eq!(safe_next(Some("/cart")), "/cart");
        assert_eq!(safe_next(Some("/products/3?x=1")), "/products/3?x=1");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "evil.example",
            "javascript:alert(1)",
            "/\nSet-Cookie:x",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn the_login_url_carries_next() {
        assert_eq!(login_url("/cart"), "/login?next=%2Fcart");
        assert_eq!(login_url("/"), "/login");
    }
}
