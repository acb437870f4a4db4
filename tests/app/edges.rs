//! The edges of a session's life: a login in another user's session starts clean, a write
//! racing a login is carried or refused (never acknowledged and lost), and new guest sessions
//! are bounded per client address and, on the database, in all.

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;

use super::common::{self, PASSWORD, TestApp, Variant, client_with_cookie, session_cookie};

/// Products in the seeded catalog with plenty of stock.
const FIRST: i64 = 1;
const SECOND: i64 = 3;

/// A login as B in a browser where A is logged in, sending exactly `cookie`.
async fn log_in_with(app: &TestApp, cookie: &str, username: &str) -> reqwest::Response {
    let client = client_with_cookie(cookie);
    app.log_in_as(&client, username, PASSWORD).await
}

/// `/session.json` for exactly this session cookie.
async fn session_of(app: &TestApp, cookie: &str) -> serde_json::Value {
    app.session_json_of(&client_with_cookie(cookie)).await
}

fn cart_ids(session: &serde_json::Value) -> Vec<i64> {
    session["cart"]
        .as_array()
        .expect("cart array")
        .iter()
        .map(|line| line["product_id"].as_i64().expect("id"))
        .collect()
}

async fn a_login_in_another_users_session_starts_with_an_empty_cart(variant: Variant) {
    let app = common::spawn_app(variant).await;
    app.register_as(&common::client(), "bea").await;
    app.register("ann").await;
    assert_eq!(
        app.add_to_cart(FIRST, 2).await.status(),
        StatusCode::SEE_OTHER
    );
    let ann_cookie = app.cookie().expect("ann's session cookie");

    let res = app.log_in_as(&app.client, "bea", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "bea logs in over ann");

    let session = app.session_json().await;
    assert_eq!(session["user"], "bea");
    assert_eq!(
        cart_ids(&session),
        Vec::<i64>::new(),
        "ann's cart stayed out"
    );
    if variant.server_side() {
        // The server ended ann's session with the switch: its old cookie is worthless.
        assert!(
            session_of(&app, &ann_cookie).await["user"].is_null(),
            "ann's old cookie no longer logs in"
        );
    }
}

for_each_backend!(a_login_in_another_users_session_starts_with_an_empty_cart);

async fn a_user_switch_on_the_cookie_backend_revokes_the_previous_login(variant: Variant) {
    let app = common::spawn_app_with(variant, |s| s.cookie_revocation = true).await;
    app.register_as(&common::client(), "bea").await;
    app.register("ann").await;
    let ann_cookie = app.cookie().expect("ann's cookie");
    let res = app.log_in_as(&app.client, "bea", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        session_of(&app, &ann_cookie).await["user"].is_null(),
        "a copy of ann's cookie is refused once bea logged in over it"
    );
}

for_backends!(a_user_switch_on_the_cookie_backend_revokes_the_previous_login => cookie);

async fn a_login_again_as_the_same_user_keeps_the_cart(variant: Variant) {
    let app = common::spawn_app(variant).await;
    app.register("ann").await;
    assert_eq!(
        app.add_to_cart(FIRST, 1).await.status(),
        StatusCode::SEE_OTHER
    );
    let res = app.log_in_as(&app.client, "ann", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let session = app.session_json().await;
    assert_eq!(session["user"], "ann");
    assert_eq!(cart_ids(&session), vec![FIRST], "her own cart stays hers");
}

for_each_backend!(a_login_again_as_the_same_user_keeps_the_cart);

async fn an_add_with_the_key_a_login_replaced_is_refused_and_changes_nothing(variant: Variant) {
    let app = common::spawn_app(variant).await;
    app.register_as(&common::client(), "ann").await;
    assert_eq!(
        app.add_to_cart(FIRST, 1).await.status(),
        StatusCode::SEE_OTHER
    );
    let guest_cookie = app.cookie().expect("guest cookie");
    let res = app.log_in_as(&app.client, "ann", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    let late = client_with_cookie(&guest_cookie);
    let res = app.add_to_cart_as(&late, SECOND, 1).await;
    assert_eq!(
        res.status(),
        StatusCode::CONFLICT,
        "the add is refused, not acknowledged"
    );
    assert!(
        session_cookie(&res).is_none(),
        "the refusal leaves the browser's cookie (by now the login's) alone"
    );
    let page = common::body(res).await;
    assert!(
        page.contains("You logged in while this change was on its way"),
        "{page}"
    );
    let session = app.session_json().await;
    assert_eq!(session["user"], "ann");
    assert_eq!(
        cart_ids(&session),
        vec![FIRST],
        "the login's cart is as it was"
    );
}

for_backends!(an_add_with_the_key_a_login_replaced_is_refused_and_changes_nothing => memory, sqlite, postgres, redis);

/// Rounds of the login-versus-add race.
const RACES: usize = 20;

async fn an_add_racing_a_login_is_carried_into_it_or_refused(variant: Variant) {
    let app = common::spawn_app_with(variant, |s| s.login_rate_limit_per_minute = 0).await;
    app.register_as(&common::client(), "ann").await;
    let (mut carried, mut refused) = (0, 0);
    for round in 0..RACES {
        let guest = common::client();
        let res = app.add_to_cart_as(&guest, FIRST, 1).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let cookie = session_cookie(&res).expect("a guest cookie");

        // The login hashes a password (milliseconds); the add lands before, during or after.
        let login = log_in_with(&app, &cookie, "ann");
        let add = async {
            tokio::time::sleep(Duration::from_millis(round as u64 * 5)).await;
            app.add_to_cart_as(&client_with_cookie(&cookie), SECOND, 1)
                .await
        };
        let (login, add) = tokio::join!(login, add);
        assert_eq!(
            login.status(),
            StatusCode::SEE_OTHER,
            "round {round}: login"
        );
        let logged_in = session_cookie(&login).expect("the login's new cookie");
        let cart = cart_ids(&session_of(&app, &logged_in).await);
        assert!(
            cart.contains(&FIRST),
            "round {round}: the guest's cart came along"
        );
        match add.status() {
            StatusCode::SEE_OTHER => {
                assert!(
                    cart.contains(&SECOND),
                    "round {round}: an acknowledged add is in the login's cart: {cart:?}"
                );
                carried += 1;
            }
            StatusCode::CONFLICT => {
                assert!(
                    !cart.contains(&SECOND),
                    "round {round}: a refused add changed nothing"
                );
                refused += 1;
            }
            other => panic!("round {round}: the add answered {other}"),
        }
    }
    eprintln!("{variant:?}: {carried} adds carried into the login, {refused} refused");
    assert_eq!(carried + refused, RACES);
}

for_backends!(an_add_racing_a_login_is_carried_into_it_or_refused => memory, sqlite, postgres, redis);

/// Parallel requests of the guest flood.
const FLOOD_PARALLEL: usize = 8;

async fn anonymous_adds_from_one_address_are_limited_and_others_keep_shopping(variant: Variant) {
    let app = common::spawn_app_with(variant, |s| {
        s.guest_sessions_per_minute = 30;
        s.login_rate_limit_per_minute = 0;
        s.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
    })
    .await;
    let from = |address: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            reqwest::header::HeaderValue::from_str(address).expect("header"),
        );
        common::client_builder()
            .cookie_store(true)
            .default_headers(headers)
            .build()
            .expect("client")
    };
    // Before the flood: a guest with a cart and a logged-in user, both from the flooding address.
    let shopper = from("203.0.113.7");
    assert_eq!(
        app.add_to_cart_as(&shopper, FIRST, 1).await.status(),
        StatusCode::SEE_OTHER
    );
    let member = from("203.0.113.7");
    app.register_as(&member, "ann").await;
    let before = app.stored_sessions().await;

    let flood = futures_util::stream::iter(0..400)
        .map(|_| async {
            // No cookie kept: every add would start a new guest session.
            let res = app.add_to_cart_as(&from("203.0.113.7"), FIRST, 1).await;
            let retry_after = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            (res.status(), retry_after, common::body(res).await)
        })
        .buffer_unordered(FLOOD_PARALLEL)
        .collect::<Vec<_>>()
        .await;
    let accepted = flood
        .iter()
        .filter(|(s, ..)| *s == StatusCode::SEE_OTHER)
        .count();
    let limited: Vec<_> = flood
        .iter()
        .filter(|(s, ..)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(accepted + limited.len(), 400, "only 303 or 429");
    assert!(limited.len() > 200, "mostly 429s: {} of 400", limited.len());
    for (_, retry_after, page) in &limited {
        assert!(retry_after.is_some_and(|s| s >= 1), "a numeric Retry-After");
        assert!(
            page.contains("Too many new carts"),
            "a page a person understands"
        );
    }
    let created = app.stored_sessions().await - before;
    eprintln!(
        "{variant:?}: 400 anonymous adds from one address: {accepted} accepted, {} refused, \
         {created} new session records",
        limited.len()
    );
    assert!(
        created <= 120,
        "{created} new session records from one address"
    );
    assert_eq!(
        app.metric("statecart_guest_sessions_refused_total").await,
        u64::try_from(limited.len()).expect("count"),
        "/metrics counts every refusal"
    );

    // Those already shopping keep shopping; a guest from elsewhere starts a cart.
    for (who, client) in [("the guest with a cart", &shopper), ("the member", &member)] {
        let res = app.add_to_cart_as(client, SECOND, 1).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{who} adds");
    }
    let elsewhere = from("198.51.100.9");
    assert_eq!(
        app.add_to_cart_as(&elsewhere, FIRST, 1).await.status(),
        StatusCode::SEE_OTHER,
        "a guest from another address"
    );
    // A login from the flooding address is not a guest session.
    let again = from("203.0.113.7");
    let res = app.log_in_as(&again, "ann", PASSWORD).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "a login from the address"
    );
}

for_backends!(anonymous_adds_from_one_address_are_limited_and_others_keep_shopping => memory, sqlite, postgres, redis);

async fn the_store_holds_at_most_max_guest_sessions(variant: Variant) {
    let app = common::spawn_app_with(variant, |s| s.max_guest_sessions = 5).await;
    let member = common::client();
    app.register_as(&member, "ann").await;
    let mut answers = Vec::new();
    for _ in 0..8 {
        let res = app.add_to_cart_as(&common::client(), FIRST, 1).await;
        let retry_after = res.headers().get("retry-after").cloned();
        answers.push((res.status(), retry_after));
    }
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SEE_OTHER)
        .count();
    assert_eq!(accepted, 5, "{answers:?}");
    for (status, retry_after) in &answers[5..] {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after.is_some(), "Retry-After on a full store");
    }
    assert_eq!(
        app.add_to_cart_as(&member, FIRST, 1).await.status(),
        StatusCode::SEE_OTHER,
        "a logged-in user is never counted as a guest"
    );
}

for_backends!(the_store_holds_at_most_max_guest_sessions => sqlite, postgres, redis, redis_cluster);
