//! The stateless half: no cookies ever, cacheable responses, proper 404s, the JSON shape.

use crate::common;

use common::{TestApp, Variant, assert_no_set_cookie, body, escaped, html_page, spawn_app};
use reqwest::{StatusCode, header::HeaderValue};

const STATELESS_ROUTES: [&str; 9] = [
    "/",
    "/about",
    "/products",
    "/products/1",
    "/products.json",
    "/static/app.css",
    "/healthz",
    "/metrics",
    "/compare",
];

/// Public answers a cache may keep, each with a strong ETag.
const CACHEABLE_ROUTES: [&str; 7] = [
    "/",
    "/about",
    "/products",
    "/products/1",
    "/products/3",
    "/products.json",
    "/static/app.css",
];

async fn stateless_routes_never_set_a_cookie_even_when_one_is_sent(variant: Variant) {
    let app = spawn_app(variant).await;
    for path in STATELESS_ROUTES {
        let res = app
            .client
            .get(app.url(path))
            .header("cookie", "id=some-session-cookie; other=1")
            .send()
            .await
            .expect("GET");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_no_set_cookie(&res, path);
    }
}

async fn every_page_names_the_instance_and_the_backend(variant: Variant) {
    let app = spawn_app(variant).await;
    for path in ["/", "/about", "/products", "/products/2", "/products/abc"] {
        let res = app.get(path).await;
        assert_eq!(
            res.headers()
                .get("x-statecart-instance")
                .map(|v| v.to_str().ok()),
            Some(Some("test-instance")),
            "{path}"
        );
        let body = body(res).await;
        assert!(
            body.contains(r#"data-test="instance">test-instance<"#),
            "{path}"
        );
        let backend = format!(r#"data-test="backend">{}<"#, variant.backend());
        assert!(body.contains(&backend), "{path} should name {backend}");
    }
}

async fn about_explains_the_running_backend(variant: Variant) {
    let app = spawn_app(variant).await;
    let body = app.page("/about").await;
    for kind in ["Stateless", "Soft state", "Stateful"] {
        assert!(body.contains(kind), "about should explain {kind}");
    }
    let facts = statecart::session::facts(variant.backend());
    assert!(body.contains(&format!("<code>{}</code> backend", variant.backend())));
    assert!(
        body.contains(&escaped(facts.location)),
        "about should say where state lives"
    );
    assert!(
        body.contains(&escaped(facts.revocation)),
        "about should say what logout revokes"
    );
}

for_each_backend!(
    stateless_routes_never_set_a_cookie_even_when_one_is_sent,
    every_page_names_the_instance_and_the_backend,
    about_explains_the_running_backend,
);

#[tokio::test]
async fn pages_and_json_are_publicly_cacheable_with_a_strong_etag() {
    let app = spawn_app(Variant::Sqlite).await;
    for path in CACHEABLE_ROUTES {
        let res = app.get(path).await;
        let etag = res
            .headers()
            .get("etag")
            .expect("etag")
            .to_str()
            .expect("ascii");
        assert!(
            etag.starts_with('"') && !etag.starts_with("W/"),
            "{path}: {etag}"
        );
        let cache = res.headers().get("cache-control").expect("cache-control");
        assert!(
            cache
                .to_str()
                .expect("ascii")
                .starts_with("public, max-age="),
            "{path}"
        );
    }
}

/// GET `path` as a cache revalidates it: with the tag it holds.
async fn revalidate(app: &TestApp, path: &str, etag: HeaderValue) -> reqwest::Response {
    let request = app.client.get(app.url(path)).header("if-none-match", etag);
    request.send().await.expect("GET")
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_without_a_body() {
    let app = spawn_app(Variant::Sqlite).await;
    for path in CACHEABLE_ROUTES {
        let first = app.get(path).await;
        let etag = first.headers().get("etag").expect("etag").clone();
        let again = revalidate(&app, path, etag.clone()).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers().get("etag"), Some(&etag), "{path}");
        assert_no_set_cookie(&again, path);
        assert!(
            again.bytes().await.expect("body").is_empty(),
            "{path}: 304 has no body"
        );

        let stale = revalidate(&app, path, HeaderValue::from_static("\"not-this-one\"")).await;
        assert_eq!(
            stale.status(),
            StatusCode::OK,
            "{path}: a stale tag gets the page"
        );
    }
}

#[tokio::test]
async fn static_assets_are_cacheable_for_a_year() {
    let app = spawn_app(Variant::Sqlite).await;
    let res = app.get("/static/app.css").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers().get("content-type").map(|v| v.to_str().ok()),
        Some(Some("text/css; charset=utf-8"))
    );
    assert_eq!(
        res.headers().get("cache-control").map(|v| v.to_str().ok()),
        Some(Some("public, max-age=31536000, immutable"))
    );
    assert_eq!(
        app.get("/static/missing.css").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn malformed_and_unknown_product_ids_get_the_404_page() {
    let app = spawn_app(Variant::Sqlite).await;
    for path in [
        "/products/abc",
        "/products/999999",
        "/products/0",
        "/products/-1",
        "/products/1%20OR%201=1",
        "/products/99999999999999999999999",
    ] {
        let body = html_page(app.get(path).await, StatusCode::NOT_FOUND, path).await;
        assert!(
            body.contains(r#"data-test="error-page""#),
            "{path}: a page in the layout"
        );
        assert!(
            body.contains("There is nothing here"),
            "{path}: a message a person reads"
        );
    }
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_pages_too() {
    let app = spawn_app(Variant::Sqlite).await;
    let res = app.get("/no/such/page").await;
    let page = html_page(res, StatusCode::NOT_FOUND, "an unknown path").await;
    assert!(page.contains(r#"data-test="error-page""#));

    let res = app.post("/products").await;
    let page = html_page(res, StatusCode::METHOD_NOT_ALLOWED, "POST /products").await;
    assert!(page.contains("does not accept this kind of request"));
}

#[tokio::test]
async fn products_json_is_an_array_of_id_name_price_and_stock() {
    let app = spawn_app(Variant::Sqlite).await;
    let res = app.get("/products.json").await;
    assert_eq!(
        res.headers().get("content-type").map(|v| v.to_str().ok()),
        Some(Some("application/json"))
    );
    let products: Vec<serde_json::Map<String, serde_json::Value>> =
        res.json().await.expect("a JSON array of objects");
    assert!(products.len() >= 12, "the seed has at least 12 products");
    for p in &products {
        let mut keys: Vec<_> = p.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["id", "name", "price_cents", "stock"]);
        assert!(p["id"].as_i64().is_some_and(|id| id > 0));
        assert!(p["name"].as_str().is_some_and(|n| !n.is_empty()));
        assert!(p["price_cents"].as_i64().is_some_and(|c| c > 0));
        assert!(p["stock"].as_i64().is_some_and(|s| (3..=50).contains(&s)));
    }
}

#[tokio::test]
async fn product_pages_show_what_the_json_says() {
    let app = spawn_app(Variant::Sqlite).await;
    let products: Vec<serde_json::Value> =
        app.get("/products.json").await.json().await.expect("json");
    let list = app.page("/products").await;
    for p in &products {
        let id = p["id"].as_i64().expect("id");
        let name = p["name"].as_str().expect("name");
        assert!(
            list.contains(&format!("/products/{id}")),
            "the list links product {id}"
        );
        let page = app
            .get(&format!("/products/{id}"))
            .await
            .text()
            .await
            .expect("body");
        assert!(page.contains(&escaped(name)), "page {id} names {name}");
        let cents = p["price_cents"].as_i64().expect("price");
        assert!(
            page.contains(&format!("${}.{:02}", cents / 100, cents % 100)),
            "page {id} shows its price"
        );
    }
}

#[tokio::test]
async fn healthz_says_ok_when_the_database_answers() {
    let app = spawn_app(Variant::Sqlite).await;
    let health = app.json("/healthz").await;
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn the_catalog_is_seeded_once_and_a_restart_keeps_the_same_rows() {
    let app = spawn_app(Variant::Sqlite).await;
    let before = app.json("/products.json").await;
    let app = app.restart().await;
    let after = app.json("/products.json").await;
    assert_eq!(before, after);
    assert_eq!(after.as_array().map(Vec::len), Some(14));
}

/// The stock `/products.json` of `app` shows for `product_id`, and that product page's ETag.
async fn public_view(app: &common::TestApp, product_id: i64) -> (i64, String) {
    let stock = app.stock_of(product_id).await;
    let page = app.get(&format!("/products/{product_id}")).await;
    let etag = page.headers()["etag"].to_str().expect("etag").to_owned();
    (stock, etag)
}

/// The catalog snapshot: this instance's own checkout shows on its public pages at once.
async fn an_own_checkout_shows_on_the_public_pages_at_once(variant: Variant) {
    let app = spawn_app(variant).await;
    let (stock, etag) = public_view(&app, 3).await;
    app.register("fresh").await;
    assert_eq!(app.add_to_cart(3, 2).await.status(), StatusCode::SEE_OTHER);
    let res = app.post_form("/checkout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (now, new_etag) = public_view(&app, 3).await;
    assert_eq!(
        now,
        stock - 2,
        "no wait: the same instance refreshed its snapshot"
    );
    assert_ne!(
        new_etag, etag,
        "the page was rendered again for the new version"
    );
    let page = app.page("/products/3").await;
    let label = match stock - 2 {
        ..=0 => "Sold out".to_owned(),
        n @ 1..=5 => format!("Only {n} left"),
        n => format!("{n} in stock"),
    };
    assert!(page.contains(&label), "{label} missing in: {page}");
}

/// Another instance on the same database sees the change at its next catalog poll (the README
/// states about a second; the test allows ten before calling it lost).
async fn a_change_made_elsewhere_reaches_every_instance_within_a_poll(variant: Variant) {
    let a = spawn_app(variant).await;
    let b = common::start(a.settings.clone(), a.data_dir.shared()).await;
    let (before, _) = public_view(&b, 5).await;
    a.set_stock_elsewhere(5, before + 7).await;
    a.wait_for_stock(5, before + 7).await;
    b.wait_for_stock(5, before + 7).await;
    // A price change made with the admin tool reaches the product page too.
    let db = a.db().await;
    let id = statecart::domain::catalog::ProductId::parse("5").expect("id");
    statecart::domain::catalog::set_price(&db, id, 12_345)
        .await
        .expect("price");
    db.close().await;
    let mut seen = false;
    for _ in 0..100 {
        let page = b.page("/products/5").await;
        if page.contains("123.45") {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the new price reached the other instance's page");
}

// The catalog lives in the app database whatever the session backend.
for_backends!(an_own_checkout_shows_on_the_public_pages_at_once => sqlite, postgres);
for_backends!(a_change_made_elsewhere_reaches_every_instance_within_a_poll => sqlite, postgres);

async fn a_guest_cart_cookie_never_reaches_the_stateless_half(variant: Variant) {
    let app = spawn_app(variant).await;
    assert_eq!(app.add_to_cart(2, 1).await.status(), StatusCode::SEE_OTHER);
    assert!(app.cookie().is_some(), "the guest has a session cookie");
    for path in STATELESS_ROUTES {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_no_set_cookie(&res, path);
    }
    assert_eq!(
        app.cart_of(&app.client).await,
        [(2, 1)],
        "the guest cart is intact"
    );
}

for_each_backend!(a_guest_cart_cookie_never_reaches_the_stateless_half);
