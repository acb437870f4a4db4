//! Cookies that are not a session, cross-site requests, and the `__Host-` cookie.

use reqwest::{StatusCode, header::HeaderValue};

use crate::{
    common::{self, Variant, credentials, set_cookie_header, spawn_app_with},
    hostile::driver::*,
};

/// Tampered, foreign-key, oversized and garbage cookies are no session, never an error.
async fn cookies_that_are_not_a_session_are_ignored(variant: Variant) {
    let shop = shop(variant).await;
    let victim = shop.app.cookie().expect("cookie");
    let mut flipped = victim.clone().into_bytes();
    let middle = flipped.len() / 2;
    flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let foreign = {
        let key = actix_web::cookie::Key::generate();
        let mut jar = actix_web::cookie::CookieJar::new();
        jar.private_mut(&key).add(actix_web::cookie::Cookie::new(
            "statecart",
            r#"{"user":"{\"id\":1,\"name\":\"vic\"}"}"#,
        ));
        jar.delta()
            .next()
            .expect("cookie")
            .encoded()
            .to_string()
            .trim_start_matches("statecart=")
            .to_owned()
    };
    let header = |v: &str| HeaderValue::from_str(v).expect("header");
    let values = [
        ("garbage", header("statecart=garbage")),
        ("empty value", header("statecart=")),
        (
            "4000-byte value",
            header(&format!("statecart={}", big(4000))),
        ),
        (
            "tampered (one byte flipped)",
            header(&format!("statecart={flipped}")),
        ),
        (
            "truncated",
            header(&format!("statecart={}", &victim[..victim.len() / 2])),
        ),
        ("foreign key", header(&format!("statecart={foreign}"))),
        (
            "duplicated name",
            header("statecart=garbage; statecart=other"),
        ),
        (
            "non-UTF-8 bytes",
            HeaderValue::from_bytes(b"statecart=\xff\xfe\xfd").expect("obs-text"),
        ),
        ("percent garbage", header("statecart=%00%ff%zz")),
        (
            "the secure name on a plain-http server",
            header(&format!("__Host-statecart={victim}")),
        ),
        ("a JSON state in clear", header(r#"statecart={"user":"1"}"#)),
    ];
    let mut cases = Vec::new();
    for (name, value) in values {
        // No session: the cart page shows an empty guest cart.
        cases.push(get(&format!("GET /cart, {name}"), "/cart", &[200]).cookie(value.clone()));
        cases.push(
            post(
                &format!("POST /cart/clear, {name}"),
                "/cart/clear",
                "",
                &[303],
            )
            .cookie(value.clone()),
        );
        cases.push(post(&format!("POST /checkout, {name}"), "/checkout", "", &[303]).cookie(value));
    }
    shop.run("cookies", cases).await;
}

/// Unsafe requests from another site are refused before the session is read.
async fn cross_site_requests_are_refused(variant: Variant) {
    let shop = shop(variant).await;
    // What gives the other site away: a header and its value.
    let cross_site = ("sec-fetch-site", "cross-site");
    let same_site = ("sec-fetch-site", "same-site");
    let foreign = ("origin", "https://evil.example");
    // Our host as a subdomain of another; our host on another port (another origin).
    let subdomain = ("origin", "http://127.0.0.1.evil.example");
    let other_port = ("origin", "http://127.0.0.1:1");
    // `what` posts `body` to `path` with that header, and is refused with 403.
    let refused = |what: &str, path: &str, body: &str, (header, value): (&'static str, &str)| {
        post(&format!("{what}, {header}: {value}"), path, body, &[403]).header(header, value)
    };
    let cases = vec![
        refused("clear", "/cart/clear", "", cross_site),
        refused("add", "/cart/add", "product_id=2&quantity=1", same_site),
        refused("update", "/cart/update", "product_id=1&quantity=0", foreign),
        refused("checkout", "/checkout", "", ("origin", "null")),
        refused("logout", "/logout", "", subdomain),
        refused(
            "revoke others",
            "/account/sessions/revoke-others",
            "",
            foreign,
        ),
        refused(
            "admin",
            "/admin/products",
            "product_id=1&price_cents=1",
            cross_site,
        ),
        refused("login", "/login", "username=vic&password=x", cross_site).anonymous(),
        refused(
            "register",
            "/register",
            "username=newbie&password=longenough",
            foreign,
        )
        .anonymous(),
        refused("checkout", "/checkout", "", other_port),
    ];
    shop.run("cross-site", cases).await;
}

/// Off loopback the cookie is `Secure` and named with the `__Host-` prefix.
async fn a_secure_cookie_has_the_host_prefix(variant: Variant) {
    count_panics();
    let app = spawn_app_with(variant, |s| s.cookie_secure = true).await;
    let res = app.post_form("/register", &credentials("sam")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookie_header(&res, "__Host-statecart")
        .expect("the session cookie, named with the __Host- prefix");
    assert!(
        cookie.contains("Secure") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Domain"), "{cookie}");
}

for_each_backend!(
    cookies_that_are_not_a_session_are_ignored,
    cross_site_requests_are_refused,
    a_secure_cookie_has_the_host_prefix,
);
