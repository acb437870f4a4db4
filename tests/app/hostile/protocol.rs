//! Paths, methods, broken HTTP, slow bodies, response headers and redirect targets.

use reqwest::{Method, StatusCode};

use crate::{
    common::{self, Variant},
    hostile::driver::*,
};

/// Percent-encoding, dot segments, double slashes and bad bytes in paths find nothing new.
async fn path_tricks_find_nothing(variant: Variant) {
    let shop = shop(variant).await;
    let get_raw = |name: &str, path: &[u8], expect: &[u16]| {
        let mut bytes = b"GET ".to_vec();
        bytes.extend_from_slice(path);
        bytes.extend_from_slice(
            b" HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
        );
        raw(name, bytes, expect)
    };
    // Paths that are no route: 404.
    let nowhere: &[(&str, &[u8])] = &[
        ("dot segments in static", b"/static/../Cargo.toml"),
        ("encoded slash in static", b"/static/..%2F..%2FCargo.toml"),
        ("encoded dots in static", b"/static/%2e%2e/app.css"),
        ("double slash", b"//cart"),
        ("double slash inside", b"/cart//live"),
        ("encoded slash in a product", b"/products/..%2F1"),
        ("NUL in a product", b"/products/1%00"),
        ("non-UTF-8 percent path", b"/%FF%FE"),
        ("25-digit product", b"/products/9999999999999999999999999"),
        ("negative product", b"/products/-1"),
        // (Another user's order is a 404 too: cart.rs `orders_are_private_to_their_owner`.)
        ("an order of no one", b"/orders/1"),
        ("an order that is no number", b"/orders/abc"),
        ("trailing slash", b"/session.json/"),
    ];
    // Paths the protocol layer may refuse before routing: 400, or else 404.
    let refused_or_nowhere: &[(&str, &[u8])] = &[
        ("dot segments to a file", b"/../../etc/passwd"),
        ("raw non-UTF-8 bytes in the path", b"/\xff\xfe"),
        ("backslash", b"/cart\\..\\admin"),
    ];
    let mut cases: Vec<Case> = nowhere
        .iter()
        .map(|&(name, path)| get_raw(name, path, &[404]))
        .chain(
            refused_or_nowhere
                .iter()
                .map(|&(name, path)| get_raw(name, path, &[400, 404])),
        )
        .collect();
    let long = format!("/{}", big(8_000));
    cases.extend([
        get_raw("8 KB path", long.as_bytes(), &[400, 404, 414, 431]),
        get("GET /log%69n while logged in", "/log%69n", &[303]),
        post(
            "login POST, percent-encoded path",
            "/%6Cogin",
            "username=vic&password=wrong",
            &[422],
        )
        .anonymous(),
        get(
            "next to another site",
            "/login?next=//evil.example/",
            &[303],
        ),
        get(
            "next with CR LF",
            "/login?next=/%0d%0aSet-Cookie:%20x=1",
            &[303],
        ),
    ]);
    shop.run("paths", cases).await;
    // The compare page is public: it must not show where this server keeps its files.
    let page = shop.app.page("/compare").await;
    let data_dir = shop.app.settings.data_dir.display().to_string();
    assert!(!page.contains(&data_dir), "/compare shows {data_dir}");
}

/// The wrong method on every stateful route, and tunnelling headers, change nothing.
async fn the_wrong_method_changes_nothing(variant: Variant) {
    let shop = shop(variant).await;
    let cases = vec![
        get("GET /logout", "/logout", &[404, 405]),
        get("GET /checkout", "/checkout", &[404, 405]),
        get("GET /cart/clear", "/cart/clear", &[404, 405]),
        get(
            "GET /cart/add with a query",
            "/cart/add?product_id=2&quantity=1",
            &[404, 405],
        ),
        case("PUT /cart/add", Method::PUT, "/cart/add", &[404, 405]),
        case("DELETE /cart", Method::DELETE, "/cart", &[404, 405]),
        case("PATCH /checkout", Method::PATCH, "/checkout", &[404, 405]),
        case("POST /", Method::POST, "/", &[404, 405]),
        case("POST /products/1", Method::POST, "/products/1", &[404, 405]),
        case("OPTIONS /cart", Method::OPTIONS, "/cart", &[404, 405]),
        case("TRACE /", Method::TRACE, "/", &[404, 405]),
        case("HEAD /cart/live", Method::HEAD, "/cart/live", &[404, 405]),
        case(
            "an unknown method",
            Method::from_bytes(b"BREW").expect("method"),
            "/cart",
            &[404, 405],
        ),
        get(
            "GET /cart/clear with a method-override header",
            "/cart/clear",
            &[404, 405],
        )
        .header("x-http-method-override", "POST"),
    ];
    shop.run("methods", cases).await;
}

/// Malformed HTTP gets a 4xx from the protocol layer; the server goes on.
async fn broken_http_is_refused(variant: Variant) {
    let shop = shop(variant).await;
    let cases = vec![
        raw(
            "Content-Length with chunked",
            "POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        raw(
            "negative Content-Length",
            "POST /cart/clear HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: -1\r\n\r\n",
            &[400],
        ),
        raw(
            "two different Content-Lengths",
            "POST /checkout HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nrev=2",
            &[400],
        ),
        raw(
            "a header without a colon",
            "GET /cart HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n",
            &[400],
        ),
        raw("garbage instead of a request", "HELLO\r\n\r\n", &[400]),
        raw(
            "64 KB of headers",
            format!(
                "GET /cart HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
                big(64 * 1024)
            ),
            &[200, 400, 431],
        ),
        raw(
            "HTTP/1.0 without Host",
            "GET /cart HTTP/1.0\r\n\r\n",
            &[200],
        ),
        raw(
            "an unknown HTTP version",
            "GET / HTTP/7.0\r\nHost: x\r\n\r\n",
            &[400, 505],
        ),
        raw(
            "absolute-form target to another host",
            "GET http://evil.example/cart HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &[200, 400],
        ),
        raw(
            "a chunked checkout with a bad chunk size (the framing is lost: closed)",
            "POST /checkout HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nrev=2\r\n0\r\n\r\n",
            &[CLOSED, 400],
        ),
    ];
    shop.run("protocol", cases).await;
}

/// A body that trickles in gets 408 once `body_read_timeout_secs` has passed (1 s here).
async fn slow_bodies_time_out_with_408(variant: Variant) {
    let shop = shop(variant).await;
    let before = shop.world().await;
    let heads = [
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nusername=v".to_owned(),
        format!(
            "POST /checkout HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nrev=",
            shop.victim_cookie()
        ),
        format!(
            "POST /cart/add HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nc\r\nproduct_id=2\r\n",
            shop.victim_cookie()
        ),
    ];
    for head in heads {
        let status = raw_status(shop.app.port, head.as_bytes()).await;
        assert_eq!(
            status,
            Ok(408),
            "{}",
            head.lines().next().unwrap_or_default()
        );
    }
    shop.assert_unharmed("slow bodies", &before).await;
}

/// Every answer, error pages included, says what browsers must refuse.
async fn every_response_carries_the_security_headers(variant: Variant) {
    let shop = shop(variant).await;
    let anonymous = common::client();
    let login_redirect = anonymous
        .get(shop.app.url("/account"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        login_redirect.status(),
        StatusCode::SEE_OTHER,
        "an anonymous /account is sent to log in"
    );
    let responses = vec![
        ("home", shop.app.get("/").await),
        ("asset", shop.app.get("/static/app.css").await),
        ("cart", shop.app.get("/cart").await),
        ("404", shop.app.get("/nope").await),
        ("405", shop.app.get("/logout").await),
        (
            "403 from middleware",
            shop.app
                .client
                .post(shop.app.url("/cart/clear"))
                .header("sec-fetch-site", "cross-site")
                .send()
                .await
                .expect("POST"),
        ),
        ("login redirect", login_redirect),
    ];
    for (what, res) in responses {
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp:?}");
        assert!(csp.contains("script-src 'self'"), "{what}: {csp:?}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
        assert!(!header("referrer-policy").is_empty(), "{what}");
    }
}

/// `next` never puts raw UTF-8 or invisible characters into a `Location` header.
async fn redirect_targets_are_ascii_and_visible(variant: Variant) {
    let shop = shop(variant).await;
    for (next, location) in [
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/%E2%80%AEexe.txt", "/"),
        ("/a%E2%80%8Bb", "/"),
        ("/a%20b", "/a%20b"),
    ] {
        let res = shop.app.get(&format!("/login?next={next}")).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(
            res.headers()["location"].as_bytes(),
            location.as_bytes(),
            "{next}"
        );
    }
}

for_each_backend!(
    path_tricks_find_nothing,
    the_wrong_method_changes_nothing,
    broken_http_is_refused,
    slow_bodies_time_out_with_408,
    every_response_carries_the_security_headers,
    redirect_targets_are_ascii_and_visible,
);
