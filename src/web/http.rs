//! Response helpers: cacheable public responses (strong ETags, 304), redirects, safe `next` paths.

use actix_web::{
    HttpRequest, HttpResponse,
    body::MessageBody,
    http::header::{self, ContentType, InvalidHeaderValue, TryIntoHeaderValue},
};
use sha2::{Digest, Sha256};

/// `Cache-Control` of public pages and JSON: reused for 30 s, then revalidated cheaply by ETag.
pub const PUBLIC_CACHE_CONTROL: &str = "public, max-age=30";

/// A strong ETag: the first 128 bits of the body's SHA-256, quoted.
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", crate::domain::hex(&Sha256::digest(body)[..16]))
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
    cache_control: &'static str,
) -> HttpResponse {
    let body = body.into();
    let etag = etag_of(&body);
    with_etag(req, etag, content_type, body, cache_control)
}

/// A public 200 whose strong `etag` is already known (or 304 when the client holds it).
pub fn with_etag<E, C>(
    req: &HttpRequest,
    etag: E,
    content_type: C,
    body: impl MessageBody + 'static,
    cache_control: &'static str,
) -> HttpResponse
where
    E: TryIntoHeaderValue + AsRef<[u8]>,
    E::Error: Into<InvalidHeaderValue>,
    C: TryIntoHeaderValue,
    C::Error: Into<InvalidHeaderValue>,
{
    let not_modified = matches_if_none_match(req, etag.as_ref());
    let mut res = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache_control));
    if not_modified {
        res.finish()
    } else {
        res.insert_header((header::CONTENT_TYPE, content_type))
            .body(body)
    }
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
/// or invisible formatting characters), else `/`: login never redirects off-site, and never
/// to a path that reads differently from what it is. Non-ASCII and other bytes a URL cannot
/// hold are percent-encoded, so the `Location` header is plain ASCII.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.chars().any(|c| c.is_control() || is_format(c))
                && path.len() <= 2048 =>
        {
            percent_encode_unsafe(path)
        }
        _ => "/".to_owned(),
    }
}

/// Unicode's format characters (general category Cf): invisible, and some (the bidi
/// overrides such as U+202E) make text display in another order than it is.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Percent-encodes every byte a URL may not carry as it is (non-ASCII, space, `"<>^`{|}`);
/// existing `%XX` escapes and the rest of a path and query stay as they are.
fn percent_encode_unsafe(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_graphic() && !b"\"<>^`{|}".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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
    fn next_targets_are_plain_ascii_and_never_invisible() {
        assert_eq!(safe_next(Some("/café")), "/caf%C3%A9");
        assert_eq!(safe_next(Some("/a b?q=<x>")), "/a%20b?q=%3Cx%3E");
        assert_eq!(safe_next(Some("/cart%20x")), "/cart%20x");
        for bad in [
            "/\u{202E}txt.exe",
            "/a\u{200B}b",
            "/\u{FEFF}",
            "/x\u{E0041}",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
    }

    #[test]
    fn the_login_url_carries_next() {
        assert_eq!(login_url("/cart"), "/login?next=%2Fcart");
        assert_eq!(login_url("/"), "/login");
    }
}
