//! The cart in the session and checkout into the database, on every backend.

use crate::common;

use common::{
    PASSWORD, TestApp, Variant, assert_no_set_cookie, body, html_page, location, spawn_app,
    spawn_app_with,
};
use reqwest::StatusCode;

/// Changes stock the way another instance or `statecart admin` would (through the catalog
/// clock), then waits until the app's snapshot shows it.
async fn set_stock(app: &TestApp, product_id: i64, stock: i64) {
    app.set_stock_elsewhere(product_id, stock).await;
    app.wait_for_stock(product_id, stock).await;
}

/// The cart revision the checkout form on `/cart` carries, as the browser would send it back.
async fn checkout_rev(app: &TestApp) -> String {
    let page = app.page("/cart").await;
    page.split(r#"name="rev" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the checkout form carries the cart revision")
        .to_owned()
}

/// Adds products with long ids (ten digits) to the catalog, `count` of them, as a catalog
/// change (the clock moves), and waits until the app's snapshot has them.
async fn add_many_products(app: &TestApp, count: i64) -> Vec<i64> {
    let db = app.db().await;
    let mut tx = db.pool.begin().await.expect("begin");
    let version = statecart::domain::catalog::next_version(&mut tx)
        .await
        .expect("move the catalog clock");
    let mut ids = Vec::new();
    for i in 0..count {
        let id = 1_000_000_000 + i;
        sqlx::query(
            "INSERT INTO products (id, name, description, price_cents, stock, version) \
             VALUES ($1, $2, 'x', 100, 99, $3)",
        )
        .bind(id)
        .bind(format!("Extra {i}"))
        .bind(version)
        .execute(&mut *tx)
        .await
        .expect("insert");
        ids.push(id);
    }
    tx.commit().await.expect("commit");
    db.close().await;
    if let Some(&last) = ids.last() {
        app.wait_for_stock(last, 99).await;
    }
    ids
}

async fn lines_can_be_added_updated_removed_and_cleared(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("ann").await;
    let res = app.add_to_cart(1, 2).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/cart");
    app.add_to_cart(1, 1).await;
    app.add_to_cart(3, 1).await;
    assert_eq!(
        app.cart_of(&app.client).await,
        [(1, 3), (3, 1)],
        "adding joins a line"
    );
    let page = app.page("/cart").await;
    assert!(
        page.contains("Added 1 × Burr hand grinder to your cart."),
        "a flash says what happened"
    );
    assert!(
        page.contains(r#"data-test="cart-count">2<"#),
        "the header counts lines"
    );
    assert!(page.contains("$174.50"), "3 × $28.50 + $89.00");

    let res = app
        .post_form("/cart/update", &[("product_id", "1"), ("quantity", "5")])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    app.post_form("/cart/update", &[("product_id", "3"), ("quantity", "0")])
        .await;
    assert_eq!(
        app.cart_of(&app.client).await,
        [(1, 5)],
        "0 removes the line"
    );

    let res = app.post_form("/cart/clear", &[]).await;
    assert_eq!(location(&res), "/cart");
    assert!(app.cart_of(&app.client).await.is_empty());
    let page = app.page("/cart").await;
    assert!(page.contains("Your cart is empty now."));
}

/// Refused forms of one cart path: `(product_id, quantity, status)`, where `None` leaves the
/// field out.
type BadForms<'a> = &'a [(Option<&'a str>, Option<&'a str>, u16)];

async fn every_bad_input_gets_a_clear_4xx_and_leaves_the_cart_unchanged(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("ben").await;
    app.add_to_cart(2, 1).await;
    let before = app.cart_of(&app.client).await;
    let big = "9".repeat(20 * 1024);
    let adds: BadForms = &[
        (Some("abc"), Some("1"), 400),
        (Some(""), Some("1"), 400),
        (Some("1 OR 1=1"), Some("1"), 400),
        (Some("1; DROP TABLE products;--"), Some("1"), 400),
        (Some("-1"), Some("1"), 400),
        (None, Some("1"), 400),
        (Some("999999"), Some("1"), 404),
        (Some("1"), Some("0"), 422),
        (Some("1"), Some("-2"), 422),
        (Some("1"), Some("100"), 422),
        (Some("1"), Some("99999999999999999999"), 422),
        (Some("1"), Some("two"), 400),
        (Some("1"), Some("1.5"), 400),
        (Some("1"), Some(&big), 413),
    ];
    let updates: BadForms = &[
        (Some("4"), Some("2"), 422),
        (Some("2"), None, 400),
        (Some("2"), Some("-1"), 422),
        (Some("x"), Some("1"), 400),
    ];
    for (path, forms) in [("/cart/add", adds), ("/cart/update", updates)] {
        for &(product_id, quantity, status) in forms {
            let form: Vec<(&str, &str)> = [("product_id", product_id), ("quantity", quantity)]
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?)))
                .collect();
            let what = format!("{path} {form:?}");
            let status = StatusCode::from_u16(status).expect("status");
            let page = html_page(app.post_form(path, &form).await, status, &what).await;
            assert!(
                page.contains(r#"data-test="error-message""#),
                "{what}: a clear message"
            );
            assert_eq!(
                app.cart_of(&app.client).await,
                before,
                "{what} changed the cart"
            );
        }
    }
    // Not a form at all.
    let res = app
        .client
        .post(app.url("/cart/add"))
        .header("content-type", "application/json")
        .body(r#"{"product_id":1,"quantity":1}"#)
        .send()
        .await
        .expect("POST");
    assert!(res.status().is_client_error(), "{}", res.status());
    assert_eq!(app.cart_of(&app.client).await, before);
}

async fn adding_more_than_the_stock_is_refused(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("cleo").await;
    set_stock(&app, 12, 3).await;
    assert_eq!(app.add_to_cart(12, 2).await.status(), StatusCode::SEE_OTHER);
    let res = app.add_to_cart(12, 2).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body = res.text().await.expect("body");
    assert!(
        body.contains("has only 3 left (your cart already holds 2)"),
        "{body}"
    );
    assert_eq!(app.cart_of(&app.client).await, [(12, 2)]);
    set_stock(&app, 12, 0).await;
    let page = app.page("/products/12").await;
    assert!(
        page.contains(r#"data-test="sold-out""#),
        "a sold-out product offers no form"
    );
}

async fn the_default_line_limit_keeps_the_cookie_well_under_4096_bytes(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("a_rather_long_username_of_32_ch").await;
    let ids = add_many_products(&app, 50).await;
    for id in &ids {
        assert_eq!(
            app.add_to_cart(*id, 99).await.status(),
            StatusCode::SEE_OTHER
        );
    }
    let res = app.add_to_cart(1, 1).await;
    assert_eq!(
        res.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "line 51 is refused"
    );
    assert!(body(res).await.contains("50 different products"));
    let json = app.session_json().await;
    assert_eq!(json["cart_lines"], 50);
    let cookie_bytes = json["cookie_bytes"].as_u64().expect("bytes");
    if variant == Variant::Cookie {
        assert!(
            cookie_bytes < 3072,
            "a full cart's cookie is {cookie_bytes} bytes"
        );
    } else {
        assert!(
            cookie_bytes < 200,
            "server-side state keeps the cookie a key: {cookie_bytes}"
        );
    }
}

async fn a_cookie_over_4096_bytes_is_refused_and_the_cart_kept(variant: Variant) {
    let app = spawn_app_with(variant, |s| s.cart_max_lines = 1000).await;
    app.register("dora").await;
    let ids = add_many_products(&app, 400).await;
    let mut refused = None;
    for id in &ids {
        let before = app.cart_of(&app.client).await;
        let res = app.add_to_cart(*id, 99).await;
        if res.status() == StatusCode::SEE_OTHER {
            let bytes = app.session_json().await["cookie_bytes"]
                .as_u64()
                .expect("bytes");
            assert!(
                bytes <= 4096,
                "an accepted change made a {bytes}-byte cookie"
            );
            continue;
        }
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = res.text().await.expect("body");
        assert!(body.contains("larger than the 4096 bytes"), "{body}");
        assert_eq!(
            app.cart_of(&app.client).await,
            before,
            "the old cart stays intact"
        );
        refused = Some(before.len());
        break;
    }
    let lines = refused.expect("the cookie limit was reached");
    assert!(lines > 100, "only {lines} lines fit");
    let bytes = app.session_json().await["cookie_bytes"]
        .as_u64()
        .expect("bytes");
    assert!(
        bytes > 3800 && bytes <= 4096,
        "filled to the limit: {bytes}"
    );
}

async fn the_inspector_shows_the_cart_and_its_cost(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("eve").await;
    let empty = app.session_json().await;
    app.add_to_cart(1, 1).await;
    app.add_to_cart(2, 3).await;
    app.add_to_cart(5, 1).await;
    let full = app.session_json().await;
    assert_eq!(full["cart_lines"], 3);
    assert_eq!(
        full["cart"],
        serde_json::json!([
            {"product_id": 1, "quantity": 1},
            {"product_id": 2, "quantity": 3},
            {"product_id": 5, "quantity": 1}
        ])
    );
    let grew = |key: &str| full[key].as_u64() > empty[key].as_u64();
    if variant == Variant::Cookie {
        assert!(grew("cookie_bytes"), "the cookie carries the cart");
        assert_eq!(full["server_bytes"], 0);
    } else {
        assert!(grew("server_bytes"), "the server stores the cart");
        // The cookie holds only the encrypted key: its size varies a little with the encoding
        // of each fresh encryption, never with the cart.
        assert!(
            full["cookie_bytes"].as_u64() < Some(200),
            "the cookie is only a key"
        );
    }
}

async fn checkout_writes_the_order_decrements_stock_and_empties_the_cart(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("fay").await;
    let (stock1, stock3) = (app.stock_of(1).await, app.stock_of(3).await);
    app.add_to_cart(1, 2).await;
    app.add_to_cart(3, 1).await;
    let res = app.post_form("/checkout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let order_path = location(&res);
    assert!(order_path.starts_with("/orders/"), "{order_path}");
    let page = app.page(order_path).await;
    assert!(
        page.contains(r#"data-test="order-total"><strong>$146.00<"#),
        "2 × $28.50 + $89.00"
    );
    assert!(page.contains("Thank you! Order #"));
    assert_eq!(app.stock_of(1).await, stock1 - 2);
    assert_eq!(app.stock_of(3).await, stock3 - 1);
    assert!(app.cart_of(&app.client).await.is_empty());
    let orders = app.page("/orders").await;
    assert!(orders.contains(&format!(r#"href="{order_path}""#)));
    assert_eq!(orders.matches(r#"data-test="order-row""#).count(), 1);
}

async fn an_empty_cart_cannot_be_checked_out(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("gil").await;
    let res = app.post_form("/checkout", &[]).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body(res).await.contains("Your cart is empty"));
    assert_eq!(app.count_rows("orders").await, 0);
}

async fn checkout_answers_409_when_stock_ran_out_after_adding(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("hal").await;
    set_stock(&app, 12, 3).await;
    app.add_to_cart(12, 3).await;
    app.add_to_cart(2, 1).await;
    let rival = TestApp::client_registered(&app, "ida").await;
    app.buy_as(&rival, 12, 2).await;
    let stock2 = app.stock_of(2).await;
    let res = app.post_form("/checkout", &[]).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(
        body(res)
            .await
            .contains("Only 1 of Cold brew bottle, 1 l left")
    );
    assert_eq!(
        app.cart_of(&app.client).await,
        [(12, 3), (2, 1)],
        "the cart is unchanged"
    );
    assert_eq!(app.stock_of(12).await, 1);
    assert_eq!(app.stock_of(2).await, stock2, "no partial write");
    assert_eq!(app.count_rows("orders").await, 1, "only the rival's order");
}

async fn concurrent_buyers_never_oversell(variant: Variant) {
    let app = spawn_app_with(variant, |s| s.login_rate_limit_per_minute = 0).await;
    let mut buyers = Vec::new();
    for i in 0..20 {
        let buyer = TestApp::client_registered(&app, &format!("buyer{i}")).await;
        let res = app.add_to_cart_as(&buyer, 1, 1).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        buyers.push(buyer);
    }
    set_stock(&app, 1, 5).await;
    let url = app.url("/checkout");
    let attempts = buyers.iter().map(|b| b.post(&url).send());
    let results = futures_util::future::join_all(attempts).await;
    let statuses: Vec<StatusCode> = results
        .into_iter()
        .map(|r| r.expect("POST").status())
        .collect();
    let sold = statuses
        .iter()
        .filter(|s| **s == StatusCode::SEE_OTHER)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((sold, refused), (5, 15), "{statuses:?}");
    assert_eq!(app.stock_of(1).await, 0);
    assert_eq!(app.count_rows("orders").await, 5);
}

async fn a_double_submitted_checkout_creates_one_order(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("jon").await;
    app.add_to_cart(4, 2).await;
    let stock = app.stock_of(4).await;
    let rev = checkout_rev(&app).await;
    let url = app.url("/checkout");
    let form = [("rev", rev.as_str())];
    let (a, b) = tokio::join!(
        app.client.post(&url).form(&form).send(),
        app.client.post(&url).form(&form).send()
    );
    let (a, b) = (a.expect("POST"), b.expect("POST"));
    assert_eq!(a.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&a), location(&b), "both land on the same order");
    assert_eq!(app.count_rows("orders").await, 1);
    assert_eq!(app.stock_of(4).await, stock - 2, "stock taken once");
}

async fn a_stale_checkout_form_orders_nothing(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("joy").await;
    app.add_to_cart(4, 1).await;
    let rev = checkout_rev(&app).await;
    // The cart changes in another tab after this page was shown.
    app.add_to_cart(6, 1).await;
    let res = app.post_form("/checkout", &[("rev", &rev)]).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(body(res).await.contains("Your cart changed"));
    assert_eq!(app.count_rows("orders").await, 0);
    assert_eq!(app.cart_of(&app.client).await, [(4, 1), (6, 1)]);
}

async fn orders_are_private_to_their_owner(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("kim").await;
    app.add_to_cart(1, 1).await;
    let order_path = location(&app.post_form("/checkout", &[]).await).to_owned();
    let other = TestApp::client_registered(&app, "lou").await;
    let res = app.get_as(&other, &order_path).await;
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "no hint that it exists"
    );
    let missing = app.get_as(&other, "/orders/999999").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        body(res).await,
        body(missing).await,
        "another user's order reads exactly like a missing one"
    );
    let list = body(app.get_as(&other, "/orders").await).await;
    assert!(list.contains(r#"data-test="no-orders""#));
    assert_eq!(app.get("/orders/abc").await.status(), StatusCode::NOT_FOUND);
}

async fn the_cart_survives_a_restart_except_in_memory(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("max").await;
    app.add_to_cart(2, 2).await;
    let app = app.restart_keeping_client().await;
    let survived = app.is_logged_in(&app.client).await;
    if variant == Variant::Memory {
        assert!(!survived, "memory state dies with the process");
        assert!(app.cart_of(&app.client).await.is_empty());
    } else {
        assert!(survived, "{variant:?} keeps the login across a restart");
        assert_eq!(app.cart_of(&app.client).await, [(2, 2)]);
    }
}

async fn a_guest_fills_a_cart_and_registering_keeps_it(variant: Variant) {
    let app = spawn_app(variant).await;
    let page = app.page("/products/3").await;
    assert!(
        page.contains(r#"action="/cart/add""#),
        "product pages carry the form"
    );
    // Reading the cart with no cookie creates nothing.
    let res = app.get("/cart").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_set_cookie(&res, "an empty guest /cart");
    assert!(app.cookie().is_none());
    // The first write starts the session.
    let res = app.add_to_cart(3, 2).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(app.cookie().is_some(), "the first add starts a session");
    assert_eq!(app.add_to_cart(5, 1).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.cart_of(&app.client).await, [(3, 2), (5, 1)]);
    let json = app.session_json().await;
    assert!(json["user"].is_null(), "no one is logged in: {json}");
    let page = app.page("/cart").await;
    assert!(page.contains(r#"data-test="guest-note""#), "{page}");
    // Update and clear work for guests too.
    let res = app
        .post_form("/cart/update", &[("product_id", "5"), ("quantity", "4")])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.cart_of(&app.client).await, [(3, 2), (5, 4)]);
    // Checkout asks for an account and keeps the cart.
    let res = app.post_form("/checkout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?next=%2Fcart");
    assert_eq!(app.count_rows("orders").await, 0);
    let guest_cookie = app.cookie().expect("cookie");
    let res = app
        .post_form(
            "/register",
            &[
                ("username", "ned"),
                ("password", PASSWORD),
                ("next", "/cart"),
            ],
        )
        .await;
    assert_eq!(location(&res), "/cart");
    assert_ne!(
        app.cookie(),
        Some(guest_cookie),
        "the session id is renewed"
    );
    let page = app.page("/cart").await;
    assert!(
        page.contains("Your cart came with you (2 products)"),
        "{page}"
    );
    assert_eq!(app.cart_of(&app.client).await, [(3, 2), (5, 4)]);
    let res = app.post_form("/checkout", &[]).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the same cart checks out"
    );
    assert_eq!(app.count_rows("orders").await, 1);
    assert!(app.cart_of(&app.client).await.is_empty());
}

async fn a_guest_cart_comes_along_into_a_login(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("olive").await;
    app.post_form("/logout", &[]).await;
    assert_eq!(app.add_to_cart(2, 1).await.status(), StatusCode::SEE_OTHER);
    let res = app
        .post_form("/login", &[("username", "olive"), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.cart_of(&app.client).await, [(2, 1)]);
    assert_eq!(app.session_json().await["user"], "olive");
}

async fn an_idle_guest_cart_ends_on_its_own_timeout(variant: Variant) {
    // Stores count expiry in whole seconds: a 1-second timeout could end the guest between
    // the add and the first look at the cart; 2 seconds cannot.
    let app = spawn_app_with(variant, |s| {
        s.guest_idle_timeout = std::time::Duration::from_secs(2)
    })
    .await;
    assert_eq!(app.add_to_cart(2, 1).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.cart_of(&app.client).await, [(2, 1)]);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let page = app.page("/cart").await;
    // The cookie brings the guest's times, so the server can say why; a server-side store
    // already dropped the guest, and the server only knows the cookie is stale.
    assert!(
        page.contains("Your cart was emptied after a period of inactivity")
            || (variant.server_side() && page.contains("Your session has ended")),
        "{page}"
    );
    assert!(app.cart_of(&app.client).await.is_empty());
}

for_each_backend!(
    every_bad_input_gets_a_clear_4xx_and_leaves_the_cart_unchanged,
    adding_more_than_the_stock_is_refused,
    the_default_line_limit_keeps_the_cookie_well_under_4096_bytes,
    the_inspector_shows_the_cart_and_its_cost,
    an_empty_cart_cannot_be_checked_out,
    checkout_answers_409_when_stock_ran_out_after_adding,
    concurrent_buyers_never_oversell,
    a_double_submitted_checkout_creates_one_order,
    a_stale_checkout_form_orders_nothing,
    orders_are_private_to_their_owner,
    a_guest_fills_a_cart_and_registering_keeps_it,
    an_idle_guest_cart_ends_on_its_own_timeout,
);

// Only the cookie backend carries the cart in the cookie.
for_backends!(a_cookie_over_4096_bytes_is_refused_and_the_cart_kept => cookie);

/// "Log out everywhere else" with a cookie already at its size limit: either this session
/// moves into the new epoch (the other one ends), or the change is refused before anything
/// moved (the other one goes on); never is this session left behind the epoch.
async fn with_cookie_revocation_a_full_cookie_still_follows_the_new_epoch(variant: Variant) {
    let app = spawn_app_with(variant, |s| {
        s.cart_max_lines = 1000;
        s.cookie_revocation = true;
    })
    .await;
    app.register("brim").await;
    let other = app.login_new_client("brim").await;
    let ids = add_many_products(&app, 400).await;
    let mut full = false;
    for id in &ids {
        if app.add_to_cart(*id, 99).await.status() == StatusCode::UNPROCESSABLE_ENTITY {
            full = true;
            break;
        }
    }
    assert!(full, "the cookie limit was reached");
    let res = app.post_form("/account/sessions/revoke-others", &[]).await;
    let status = res.status();
    let page = body(res).await;
    assert!(
        app.is_logged_in(&app.client).await,
        "this session is never left behind the epoch ({status})"
    );
    match status {
        StatusCode::SEE_OTHER => assert!(!app.is_logged_in(&other).await, "the other ended"),
        StatusCode::UNPROCESSABLE_ENTITY => {
            assert!(page.contains("larger than the 4096 bytes"), "{page}");
            assert!(app.is_logged_in(&other).await, "nothing changed");
        }
        unexpected => panic!("answered {unexpected}: {page}"),
    }
}

for_backends!(with_cookie_revocation_a_full_cookie_still_follows_the_new_epoch => cookie);

// The redis store family, on one node and on a Redis Cluster too.
for_each_backend_and_cluster!(
    lines_can_be_added_updated_removed_and_cleared,
    checkout_writes_the_order_decrements_stock_and_empties_the_cart,
    the_cart_survives_a_restart_except_in_memory,
    a_guest_cart_comes_along_into_a_login,
);
