//! Accounts and login sessions, on every backend: login, logout, fixation, replay, timeouts,
//! bad cookies, cross-site refusal, the inspector, /account, rate limits.

use crate::common;

use std::time::Duration;

use common::{
    PASSWORD, TestApp, Variant, assert_no_set_cookie, body, client, client_with_cookie,
    credentials, location, session_cookie, set_cookie_header, spawn_app, spawn_app_with,
};
use reqwest::StatusCode;
use statecart::config::SessionBackend;

async fn registering_logs_in_with_a_303(variant: Variant) {
    let app = spawn_app(variant).await;
    let res = app.post_form("/register", &credentials("alice")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/");
    let cookie = set_cookie_header(&res, "statecart").expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain-http localhost must keep working"
    );
    assert_eq!(app.session_json().await["user"], "alice");
}

async fn login_and_logout_work_and_logout_clears_the_cookie(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("bob").await;
    let browser = app.login_new_client("bob").await;
    assert!(app.is_logged_in(&browser).await);

    let res = app.post_as(&browser, "/logout").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?loggedout=1");
    let removal = set_cookie_header(&res, "statecart").expect("the cookie is removed");
    assert!(
        removal.contains("Max-Age=0") || removal.contains("Expires"),
        "{removal}"
    );
    assert!(!app.is_logged_in(&browser).await);
    let page = body(app.get_as(&browser, "/login?loggedout=1").await).await;
    assert!(page.contains("You have logged out."));
}

async fn stateful_pages_without_login_redirect_to_login_with_next(variant: Variant) {
    let app = spawn_app(variant).await;
    let res = app.get("/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?next=%2Faccount");
    let page = app.page("/login?next=%2Faccount").await;
    assert!(
        page.contains("Please log in (or create an account) to continue"),
        "the page says why"
    );
    assert!(
        page.contains(r#"name="next" value="/account""#),
        "and keeps where to go"
    );
}

async fn a_taken_username_gets_a_friendly_422_whatever_its_case(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("Carol").await;
    let other = client();
    for name in ["Carol", "carol", "CAROL"] {
        let res = app
            .post_form_as(&other, "/register", &credentials(name))
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{name}");
        let body = body(res).await;
        assert!(body.contains("That username is taken"), "{name}");
        assert!(
            body.contains(&format!(r#"value="{name}""#)),
            "the form keeps what was typed"
        );
    }
}

async fn invalid_usernames_and_passwords_are_refused_with_422(variant: Variant) {
    let app = spawn_app(variant).await;
    let long_password = "p".repeat(129);
    for (username, password, message) in [
        ("ab", PASSWORD, "3 to 32 characters"),
        ("has space", PASSWORD, "only letters, digits"),
        ("dave", "short", "at least 8"),
        ("dave", long_password.as_str(), "at most 128"),
        ("", "", "3 to 32 characters"),
    ] {
        let res = app
            .post_form(
                "/register",
                &[("username", username), ("password", password)],
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{username}/{password}"
        );
        assert!(body(res).await.contains(message), "{message}");
    }
    // A form missing its fields entirely gets the same clear page, not a 5xx.
    let res = app.post_form("/register", &[("x", "y")]).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        app.session_json().await["user"].is_null(),
        "nothing was created or logged in"
    );
}

async fn a_wrong_password_and_an_unknown_user_look_exactly_alike(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("erin").await;
    let attempt = async |username: &str, password: &str| {
        let res = app.log_in_as(&client(), username, password).await;
        let status = res.status();
        (status, body(res).await.replace(username, "NAME"))
    };
    let wrong_password = attempt("erin", "not the password").await;
    let unknown_user = attempt("nobody", "not the password").await;
    assert_eq!(wrong_password.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong_password, unknown_user, "same status, same page");
    assert!(wrong_password.1.contains("do not match an account"));
}

async fn next_only_ever_leads_to_a_local_path(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("frank").await;
    // Where a fresh login with this `next` is sent.
    let log_in_to = async |next: &str| {
        let form = [
            ("username", "frank"),
            ("password", PASSWORD),
            ("next", next),
        ];
        let res = app.post_form_as(&client(), "/login", &form).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{next}");
        location(&res).to_owned()
    };
    assert_eq!(log_in_to("/account").await, "/account", "a local path");
    for elsewhere in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "evil.example",
    ] {
        assert_eq!(log_in_to(elsewhere).await, "/", "{elsewhere}");
    }
}

async fn login_issues_a_new_session_id(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("gina").await;
    app.register("hank").await;
    let before = app.cookie().expect("a session cookie");
    let res = app.post_form("/login", &credentials("gina")).await;
    let after = session_cookie(&res).expect("login sets a new cookie");
    assert_ne!(before, after);
    assert_eq!(app.session_json().await["user"], "gina");
    // On server-side stores the old id is gone, not merely replaced in this browser.
    if variant != Variant::Cookie {
        assert!(!app.is_logged_in(&client_with_cookie(&before)).await);
    }
}

async fn an_unknown_session_id_is_never_adopted(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("ivy").await;
    // An attacker plants a cookie; logging in must not keep it.
    let planted = client_with_cookie("planted-by-an-attacker");
    let res = app.log_in_as(&planted, "ivy", PASSWORD).await;
    let issued = session_cookie(&res).expect("a new cookie");
    assert_ne!(issued, "planted-by-an-attacker");
    assert!(!app.is_logged_in(&planted).await);
}

async fn a_replayed_pre_logout_cookie_is_rejected_except_on_the_cookie_backend(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("jack").await;
    let saved = app.cookie().expect("cookie");
    assert_eq!(app.post("/logout").await.status(), StatusCode::SEE_OTHER);
    let replay = client_with_cookie(&saved);
    let still_valid = app.is_logged_in(&replay).await;
    // The documented trade-off: a stateless server cannot revoke what it never stored.
    assert_eq!(still_valid, variant == Variant::Cookie);
}

async fn an_idle_session_ends_and_leads_to_the_login_page(variant: Variant) {
    let app = spawn_app_with(variant, |s| {
        s.idle_timeout = std::time::Duration::from_secs(2)
    })
    .await;
    app.register("kate").await;
    assert!(app.is_logged_in(&app.client).await);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let res = app.get("/account").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login?next=%2Faccount");
    let page = app.get("/login?next=%2Faccount").await;
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "an expired session is never an error"
    );
    let page = page.text().await.expect("body");
    if variant == Variant::Cookie {
        // The state (with its times) came back in the cookie, so the server can say why.
        assert!(page.contains("period of inactivity"));
    } else {
        // Soft state: the store already dropped it; the server only knows the cookie is stale.
        assert!(page.contains("Your session has ended"));
    }
    assert!(
        app.cookie().is_none(),
        "the message shown, no empty session is kept"
    );
}

async fn activity_keeps_a_session_alive_past_the_idle_timeout(variant: Variant) {
    let app = spawn_app_with(variant, |s| {
        s.idle_timeout = std::time::Duration::from_secs(2)
    })
    .await;
    app.register("liam").await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(app.is_logged_in(&app.client).await);
    }
}

async fn a_session_ends_at_the_absolute_timeout_whatever_the_activity(variant: Variant) {
    let app = spawn_app_with(variant, |s| {
        s.idle_timeout = std::time::Duration::from_secs(60);
        s.absolute_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    app.register("mia").await;
    let mut logged_in = true;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        logged_in = app.is_logged_in(&app.client).await;
        if !logged_in {
            break;
        }
    }
    assert!(!logged_in, "still logged in after the absolute timeout");
    assert!(app.page("/login").await.contains("maximum length"));
}

async fn tampered_garbage_and_oversized_cookies_mean_no_session(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("noah").await;
    let valid = app.cookie().expect("cookie");
    let mut tampered = valid.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let huge = "A".repeat(8 * 1024);
    for value in [tampered.as_str(), "garbage", "", "%%%", huge.as_str()] {
        let browser = client_with_cookie(value);
        for path in ["/session.json", "/session", "/account", "/login"] {
            let res = app.get_as(&browser, path).await;
            assert!(
                matches!(res.status(), StatusCode::OK | StatusCode::SEE_OTHER),
                "{path} with a bad cookie answered {}",
                res.status()
            );
        }
        let json = app.session_json_of(&browser).await;
        assert!(json["user"].is_null(), "a bad cookie is no session");
    }
}

async fn cross_site_posts_are_refused_and_change_nothing(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("olga").await;
    for (header, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "http://evil.example"),
        ("origin", "null"),
    ] {
        let res = app
            .client
            .post(app.url("/logout"))
            .header(header, value)
            .send()
            .await
            .expect("POST");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{header}: {value}");
        assert_no_set_cookie(&res, "a refused request");
        assert!(body(res).await.contains("sent from another site"));
        assert!(
            app.is_logged_in(&app.client).await,
            "the refused logout changed nothing"
        );
    }
    let res = client()
        .post(app.url("/register"))
        .header("origin", "http://evil.example")
        .form(&credentials("mallory"))
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let login = app.log_in_as(&client(), "mallory", PASSWORD).await;
    assert_eq!(
        login.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "no account was created"
    );

    // Same-origin browsers and non-browser clients pass.
    let own_origin = app.address.clone();
    let res = app
        .client
        .post(app.url("/logout"))
        .header("sec-fetch-site", "same-origin")
        .header("origin", own_origin)
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

async fn the_inspector_reports_where_the_state_lives(variant: Variant) {
    let app = spawn_app(variant).await;
    let anonymous = app.session_json().await;
    let mut keys: Vec<_> = anonymous
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "absolute_expires_at",
            "backend",
            "cart",
            "cart_lines",
            "cookie_bytes",
            "idle_expires_at",
            "instance",
            "live_lease_expires_at",
            "parallel_writes",
            "revocation",
            "server_bytes",
            "state_location",
            "stateful",
            "user"
        ]
    );
    assert_eq!(anonymous["backend"], variant.backend().as_str());
    assert_eq!(anonymous["stateful"], variant != Variant::Cookie);
    assert_eq!(anonymous["instance"], "test-instance");
    assert_eq!(
        anonymous["state_location"],
        statecart::session::facts(variant.backend()).location
    );
    assert!(anonymous["user"].is_null());
    assert_eq!(anonymous["cookie_bytes"], 0);
    assert_eq!(anonymous["server_bytes"], 0);
    assert!(anonymous["idle_expires_at"].is_null());
    assert_eq!(anonymous["cart"], serde_json::json!([]));
    assert_eq!(anonymous["cart_lines"], 0);

    app.register("pete").await;
    let json = app.session_json().await;
    assert_eq!(json["user"], "pete");
    let cookie = app.cookie().expect("cookie");
    assert_eq!(json["cookie_bytes"], "statecart=".len() + cookie.len());
    if variant == Variant::Cookie {
        assert_eq!(json["server_bytes"], 0, "a stateless server stores nothing");
    } else {
        assert!(json["server_bytes"].as_u64().is_some_and(|b| b > 0));
    }
    for key in ["idle_expires_at", "absolute_expires_at"] {
        let at = json[key].as_str().expect("a time");
        assert!(
            at.ends_with('Z') && at.contains('T'),
            "{key}: {at} is RFC 3339"
        );
    }
    let page = app.page("/session").await;
    assert!(page.contains(&format!("<code>{}</code>", variant.backend())));
    assert!(page.contains(r#"data-test="inspector-user">pete<"#));
}

async fn the_account_page_lists_and_revokes_other_sessions_where_it_can(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("quinn").await;
    let laptop = app.login_new_client("quinn").await;
    let page = app.page("/account").await;
    let res = app.post("/account/sessions/revoke-others").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let after = app.page("/account").await;
    if variant == Variant::Cookie {
        assert!(page.contains(r#"data-test="cannot-list""#));
        assert!(after.contains("nothing it could revoke"));
        assert!(
            app.is_logged_in(&laptop).await,
            "the cookie backend cannot revoke"
        );
    } else {
        assert_eq!(
            page.matches("<tr").count() - 1,
            2,
            "two sessions listed: {page}"
        );
        assert_eq!(page.matches(r#"data-test="current-session""#).count(), 1);
        assert!(after.contains("Ended 1 other session."));
        assert!(!app.is_logged_in(&laptop).await, "the other session ended");
        assert!(app.is_logged_in(&app.client).await, "this one goes on");
    }
}

async fn login_posts_are_rate_limited_per_address(variant: Variant) {
    let app = spawn_app_with(variant, |s| s.login_rate_limit_per_minute = 3).await;
    for _ in 0..3 {
        let res = app
            .post_form("/login", &[("username", "x"), ("password", "y")])
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let res = app.post_form("/register", &credentials("rosa")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(body(res).await.contains("Too many login attempts"));
    // Reading the pages is not limited.
    assert_eq!(app.get("/login").await.status(), StatusCode::OK);
}

/// Guessing slows down the address that guesses (the owner elsewhere is unaffected: see
/// hostile/limits.rs `guessing_throttles_the_guesser_not_the_owner`).
async fn failed_logins_make_that_address_wait_even_with_the_right_password(variant: Variant) {
    let app = spawn_app_with(variant, |s| s.login_rate_limit_per_minute = 0).await;
    app.register("sam").await;
    for _ in 0..statecart::web::guard::FREE_FAILURES {
        let res = app.log_in_as(&client(), "sam", "wrong password").await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    let res = app.log_in_as(&client(), "SAM", PASSWORD).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    assert!(res.headers().contains_key("retry-after"));
}

async fn stateless_routes_set_no_cookie_for_a_logged_in_user(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("tina").await;
    for path in [
        "/",
        "/about",
        "/products",
        "/products/1",
        "/products.json",
        "/healthz",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_no_set_cookie(&res, path);
    }
}

async fn stateful_pages_are_never_stored_by_the_browser(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("uma").await;
    for path in ["/account", "/session", "/session.json", "/login"] {
        let res = app.get(path).await;
        assert_eq!(
            res.headers().get("cache-control").map(|v| v.to_str().ok()),
            Some(Some("no-store")),
            "{path}"
        );
    }
}

for_each_backend!(
    registering_logs_in_with_a_303,
    stateful_pages_without_login_redirect_to_login_with_next,
    a_taken_username_gets_a_friendly_422_whatever_its_case,
    invalid_usernames_and_passwords_are_refused_with_422,
    a_wrong_password_and_an_unknown_user_look_exactly_alike,
    next_only_ever_leads_to_a_local_path,
    login_issues_a_new_session_id,
    an_unknown_session_id_is_never_adopted,
    an_idle_session_ends_and_leads_to_the_login_page,
    activity_keeps_a_session_alive_past_the_idle_timeout,
    a_session_ends_at_the_absolute_timeout_whatever_the_activity,
    tampered_garbage_and_oversized_cookies_mean_no_session,
    cross_site_posts_are_refused_and_change_nothing,
    the_inspector_reports_where_the_state_lives,
    login_posts_are_rate_limited_per_address,
    failed_logins_make_that_address_wait_even_with_the_right_password,
    stateless_routes_set_no_cookie_for_a_logged_in_user,
    stateful_pages_are_never_stored_by_the_browser,
);

/// Requests that bring a session the server does not know, on several kinds of page.
async fn send_unrecognised_cookies(app: &TestApp, stale: &str, count: usize) {
    for i in 0..count {
        let cookie = if i % 2 == 0 {
            stale.to_owned()
        } else {
            format!("garbage{i}{}", "x".repeat(40))
        };
        let client = client_with_cookie(&cookie);
        for path in ["/cart", "/login", "/no-such-page"] {
            let res = app.get_as(&client, path).await;
            assert!(res.status().as_u16() < 500, "{path}: {}", res.status());
        }
    }
}

async fn an_unrecognised_cookie_creates_no_server_state(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("olga").await;
    let stale = app.cookie().expect("cookie");
    app.post_form("/logout", &[]).await;
    app.register("pete").await;
    let before = app.stored_sessions().await;
    assert_eq!(before, 1, "one live session");
    send_unrecognised_cookies(&app, &stale, 20).await;
    assert_eq!(app.stored_sessions().await, before, "no record was created");
    // The browser is still told why, once, without any state on the server.
    let res = app.get_as(&client_with_cookie(&stale), "/cart").await;
    assert_eq!(res.status(), StatusCode::OK, "/cart is open to guests");
    let page = body(res).await;
    assert!(page.contains("Your session has ended"), "{page}");
    assert!(app.is_logged_in(&app.client).await);
}

async fn a_flood_of_unknown_cookies_never_evicts_a_logged_in_session(variant: Variant) {
    let app = spawn_app_with(variant, |s| s.memory_max_sessions = 5).await;
    app.register("quinn").await;
    let (other, jar) = common::client_and_jar();
    let res = app.log_in_as(&other, "quinn", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let stale = common::cookie_in(&jar, &app.address).expect("cookie");
    app.post_as(&other, "/logout").await;
    assert_eq!(app.metric("statecart_memory_sessions").await, 1);
    send_unrecognised_cookies(&app, &stale, 60).await;
    assert_eq!(
        app.metric("statecart_memory_sessions").await,
        1,
        "no entry was created"
    );
    assert!(
        app.is_logged_in(&app.client).await,
        "garbage never competes with real sessions for the memory bound"
    );
}

for_backends!(an_unrecognised_cookie_creates_no_server_state => sqlite, postgres, redis, redis_cluster);
for_backends!(a_flood_of_unknown_cookies_never_evicts_a_logged_in_session => memory);

async fn a_thousand_guests_never_log_out_a_logged_in_user(variant: Variant) {
    let app = spawn_app_with(variant, |s| {
        s.memory_max_sessions = 10;
        s.memory_max_guest_sessions = 50;
    })
    .await;
    app.register("vera").await;
    // A client that keeps no cookie: every add starts a new guest session.
    let anonymous = common::client_builder().build().expect("client");
    for n in 0..1000 {
        let res = app.add_to_cart_as(&anonymous, n % 14 + 1, 1).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
    }
    let guests = app.metric("statecart_memory_guest_sessions").await;
    assert!(guests <= 50, "{guests} guests held past their bound");
    assert!(
        app.is_logged_in(&app.client).await,
        "guests have a bound of their own and never push a login out"
    );
}

for_backends!(a_thousand_guests_never_log_out_a_logged_in_user => memory);

/// Key rotation: a cookie sealed with a previous key still opens, comes back sealed with the
/// current key, and that one keeps working once the previous key is dropped.
async fn a_cookie_sealed_with_a_previous_key_is_resealed_and_the_old_key_can_go(variant: Variant) {
    let (old_key, new_key) = (vec![7_u8; 64], vec![9_u8; 64]);
    let app = spawn_app_with(variant, |s| s.session_key = Some(old_key.clone())).await;
    app.register("rosa").await;
    assert_eq!(app.add_to_cart(3, 2).await.status(), StatusCode::SEE_OTHER);
    let old_cookie = app.cookie().expect("cookie");

    // Roll: the new key seals, the old one only opens.
    let (mut settings, data) = app.stop().await;
    settings.session_key = Some(new_key.clone());
    settings.session_previous_keys = vec![old_key];
    let app = common::start(settings, data).await;
    let res = app
        .get_as(&client_with_cookie(&old_cookie), "/session.json")
        .await;
    let resealed = session_cookie(&res).expect("the answer re-seals the cookie");
    assert_ne!(resealed, old_cookie);
    let json: serde_json::Value = res.json().await.expect("json");
    assert_eq!(json["user"], "rosa", "the old cookie still opens: {json}");
    assert_eq!(json["cart_lines"], 1);

    // Later the previous key is dropped: the re-sealed cookie works, the old one is no session.
    let (mut settings, data) = app.stop().await;
    settings.session_previous_keys = Vec::new();
    let app = common::start(settings, data).await;
    let json = app.session_json_of(&client_with_cookie(&resealed)).await;
    assert_eq!(json["user"], "rosa", "{json}");
    assert_eq!(json["cart_lines"], 1);
    assert!(!app.is_logged_in(&client_with_cookie(&old_cookie)).await);
    let page = app.get_as(&client_with_cookie(&old_cookie), "/login").await;
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "an old cookie is never an error"
    );
}

// Memory keeps no session through the restart a key change takes (see the backend table).
for_backends!(a_cookie_sealed_with_a_previous_key_is_resealed_and_the_old_key_can_go => cookie, sqlite, postgres, redis);

/// The cookie backend with `cookie_revocation`, on the variant's app database.
fn cookie_with_revocation(settings: &mut statecart::Settings) {
    settings.session_backend = SessionBackend::Cookie;
    settings.cookie_revocation = true;
}

/// `cookie_revocation`: a cookie saved before logout is refused, on this instance, on another
/// sharing the database, and after a restart; the server keeps one row for it.
async fn with_cookie_revocation_a_cookie_saved_before_logout_is_refused_everywhere(
    variant: Variant,
) {
    let a = spawn_app_with(variant, cookie_with_revocation).await;
    let b = common::start(a.settings.clone(), a.data_dir.shared()).await;
    a.register("sven").await;
    let saved = a.cookie().expect("cookie");
    assert!(
        b.is_logged_in(&client_with_cookie(&saved)).await,
        "shared key"
    );
    let res = a.post_form("/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let replay = client_with_cookie(&saved);
    assert!(
        !a.is_logged_in(&replay).await,
        "refused where it logged out"
    );
    assert!(
        !b.is_logged_in(&replay).await,
        "refused on the other instance"
    );
    let json = b.session_json_of(&client()).await;
    assert_eq!(json["revocation"]["revoked_ids"], 1, "{json}");
    drop(b);
    let a = a.restart().await;
    assert!(!a.is_logged_in(&replay).await, "refused after a restart");
}

/// `cookie_revocation`: "log out everywhere else" ends the other cookies and keeps this one.
async fn with_cookie_revocation_logging_out_the_others_keeps_this_session(variant: Variant) {
    let app = spawn_app_with(variant, cookie_with_revocation).await;
    app.register("tove").await;
    let (other_client, other_jar) = common::client_and_jar();
    let res = app.log_in_as(&other_client, "tove", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let other = client_with_cookie(&common::cookie_in(&other_jar, &app.address).expect("cookie"));
    assert!(app.is_logged_in(&other).await);
    let page = app.page("/account").await;
    assert!(page.contains(r#"data-test="revoke-others""#), "{page}");
    let res = app.post_form("/account/sessions/revoke-others", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    // This session moved into the new epoch: its cookie changed with it.
    let mine = client_with_cookie(&app.cookie().expect("cookie"));
    assert!(app.is_logged_in(&mine).await, "this session stays");
    assert!(!app.is_logged_in(&other).await, "the other one ended");
    let json = app.session_json().await;
    assert_eq!(json["revocation"]["user_epochs"], 1, "{json}");
    let page = app.page("/session").await;
    assert!(page.contains(r#"data-test="revocation""#), "{page}");
    // The epoch is in the database: another instance and a restart refuse the other too.
    let b = common::start(app.settings.clone(), app.data_dir.shared()).await;
    assert!(!b.is_logged_in(&other).await, "refused on another instance");
    assert!(b.is_logged_in(&mine).await, "this one holds there too");
    drop(b);
    let app = app.restart().await;
    assert!(!app.is_logged_in(&other).await, "refused after a restart");
    assert!(
        app.is_logged_in(&mine).await,
        "this one survives the restart"
    );
}

// `::postgres` runs the cookie backend on a PostgreSQL app database: the revocation queries
// hold on both dialects.
for_backends!(with_cookie_revocation_a_cookie_saved_before_logout_is_refused_everywhere => cookie, postgres);
// `::postgres` runs the cookie backend on a PostgreSQL app database: the revocation queries
// hold on both dialects.
for_backends!(with_cookie_revocation_logging_out_the_others_keeps_this_session => cookie, postgres);

// The redis store family, on one node and on a Redis Cluster too.
for_each_backend_and_cluster!(
    login_and_logout_work_and_logout_clears_the_cookie,
    a_replayed_pre_logout_cookie_is_rejected_except_on_the_cookie_backend,
    the_account_page_lists_and_revokes_other_sessions_where_it_can,
);
