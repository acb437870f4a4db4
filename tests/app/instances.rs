//! The real binary, per backend: restart (SIGTERM), crash (SIGKILL), and two instances side by
//! side on one database and key. The rows of the backend table, proved.

use crate::common;

use common::{
    Variant, body, client, get_json, post_form_to, prepare, process::Instance, register_at,
};
use reqwest::StatusCode;
use statecart::Settings;

/// The settings two instances share, as `STATECART_*` values.
pub(crate) fn shared(settings: &Settings, instance: &str) -> Vec<(&'static str, String)> {
    vec![
        ("data_dir", settings.data_dir.display().to_string()),
        ("database_url", settings.database_url.as_str().to_owned()),
        (
            "session_backend",
            settings.session_backend.as_str().to_owned(),
        ),
        ("redis_url", settings.redis_url.clone()),
        ("redis_cluster", settings.redis_cluster.to_string()),
        ("redis_key_prefix", settings.redis_key_prefix.clone()),
        ("instance", instance.to_owned()),
    ]
}

/// Registers a new user on `instance` and puts two lines in the cart.
async fn shop(client: &reqwest::Client, instance: &Instance) {
    register_at(client, &instance.url("/register"), "walt").await;
    for (id, qty) in [("1", "2"), ("5", "1")] {
        let form = [("product_id", id), ("quantity", qty)];
        let res = post_form_to(client, &instance.url("/cart/add"), &form).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
    }
}

/// The user and cart lines `/session.json` reports on `instance`.
async fn seen_by(client: &reqwest::Client, instance: &Instance) -> (Option<String>, usize) {
    let json = get_json(client, &instance.url("/session.json")).await;
    (
        json["user"].as_str().map(str::to_owned),
        json["cart"].as_array().map_or(0, Vec::len),
    )
}

async fn the_session_survives_a_graceful_restart_except_in_memory(variant: Variant) {
    survives(variant, "TERM").await;
}

async fn the_session_survives_a_crash_except_in_memory(variant: Variant) {
    survives(variant, "KILL").await;
}

async fn survives(variant: Variant, signal: &str) {
    let (settings, _data) = prepare(variant).await;
    let browser = client();
    let first = Instance::spawn(&shared(&settings, "first"));
    shop(&browser, &first).await;
    first.stop_with(signal);
    let again = Instance::spawn(&shared(&settings, "again"));
    let (user, lines) = seen_by(&browser, &again).await;
    if variant == Variant::Memory {
        assert_eq!(
            (user, lines),
            (None, 0),
            "memory state dies with the process ({signal})"
        );
    } else {
        assert_eq!(
            (user.as_deref(), lines),
            (Some("walt"), 2),
            "{variant:?} after {signal}"
        );
    }
}

async fn a_login_on_one_instance_holds_on_the_other_except_in_memory(variant: Variant) {
    let (settings, _data) = prepare(variant).await;
    let a = Instance::spawn(&shared(&settings, "a"));
    let b = Instance::spawn(&shared(&settings, "b"));
    let browser = client();
    shop(&browser, &a).await;

    let res = browser.get(b.url("/cart")).send().await.expect("GET");
    assert_eq!(
        res.headers()
            .get("x-statecart-instance")
            .map(|v| v.to_str().ok()),
        Some(Some("b"))
    );
    if variant == Variant::Memory {
        // The other instance has its own memory: it says so cleanly (an empty cart, as for
        // any visitor, with the reason).
        assert_eq!(res.status(), StatusCode::OK);
        let page = body(res).await;
        assert!(page.contains("Your session has ended"), "{page}");
        assert!(page.contains(r#"data-test="cart-empty""#), "{page}");
        let inspector = browser.get(b.url("/session")).send().await.expect("GET");
        assert!(body(inspector).await.contains("needs sticky routing"));
    } else {
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{variant:?}: logged in on b too"
        );
        let page = body(res).await;
        assert_eq!(
            page.matches(r#"data-test="cart-line""#).count(),
            2,
            "the cart too"
        );
        // And back: a change on b is seen on a.
        let form = [("product_id", "5"), ("quantity", "0")];
        let res = post_form_to(&browser, &b.url("/cart/update"), &form).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(seen_by(&browser, &a).await, (Some("walt".to_owned()), 1));
    }
}

async fn logout_on_one_instance_ends_the_session_on_all_where_the_server_keeps_it(
    variant: Variant,
) {
    let (settings, _data) = prepare(variant).await;
    let a = Instance::spawn(&shared(&settings, "a"));
    let b = Instance::spawn(&shared(&settings, "b"));
    let (browser, jar) = common::client_and_jar();
    shop(&browser, &a).await;
    let saved = common::cookie_in(&jar, &a.address).expect("a session cookie");
    let res = browser.post(b.url("/logout")).send().await.expect("POST");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let replay = common::client_with_cookie(&saved);
    let (user, _) = seen_by(&replay, &a).await;
    // Revocation is the server's to give: the stateless cookie backend cannot take a cookie back.
    assert_eq!(user.is_some(), variant == Variant::Cookie, "{variant:?}");
}

for_each_backend!(a_login_on_one_instance_holds_on_the_other_except_in_memory,);

// Each memory instance has sessions of its own (see the test above), so this is about the others.
for_backends!(
    logout_on_one_instance_ends_the_session_on_all_where_the_server_keeps_it =>
    cookie, sqlite, postgres, redis
);

// The redis store family, on one node and on a Redis Cluster too.
for_each_backend_and_cluster!(
    the_session_survives_a_graceful_restart_except_in_memory,
    the_session_survives_a_crash_except_in_memory,
);
