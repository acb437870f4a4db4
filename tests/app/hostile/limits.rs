//! Bursts against the login limit, parallel logins against the hashing gate, guessing.

use reqwest::StatusCode;

use crate::{
    common::{self, PASSWORD, Variant},
    hostile::driver::*,
};

/// Past the per-address limit, every spelling of /login and /register is limited, and a
/// forged `X-Forwarded-For` from an untrusted peer does not get around it. The limit is one
/// POST a minute here, and registering `vic` took it.
async fn bursts_meet_the_login_limit_on_every_spelling_of_the_path(variant: Variant) {
    let shop = shop_with(variant, |s| s.login_rate_limit_per_minute = 1).await;
    let before = shop.world().await;
    let anonymous = common::client();
    let paths = [
        "/login",
        "/%6Cogin",
        "/log%69n",
        "/%6c%6f%67%69%6e",
        "/%72egister",
        "/regist%65r",
    ];
    for path in paths.iter().cycle().take(24) {
        let res = anonymous
            .post(shop.app.url(path))
            .form(&[("username", "brandnew"), ("password", PASSWORD)])
            .send()
            .await
            .expect("POST");
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(res.headers().contains_key("retry-after"), "{path}");
    }
    let res = anonymous
        .post(shop.app.url("/login"))
        .header("x-forwarded-for", "198.51.100.77")
        .form(&[("username", "vic"), ("password", PASSWORD)])
        .send()
        .await
        .expect("POST");
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    shop.assert_unharmed("bursts", &before).await;
}

/// Parallel anonymous logins are bounded by the hashing slots: each gets the generic failure
/// or, past a short wait, 503; never a 500.
async fn parallel_logins_never_fail_with_a_server_error(variant: Variant) {
    let shop = shop(variant).await;
    let before = shop.world().await;
    let logins = (0..24).map(|i| {
        let url = shop.app.url("/login");
        async move {
            common::client()
                .post(url)
                .form(&[
                    ("username", format!("ghost{i}")),
                    ("password", "wrong".to_owned()),
                ])
                .send()
                .await
                .map(|r| r.status())
        }
    });
    for status in futures_util::future::join_all(logins).await {
        let status = status.expect("an answer");
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
    }
    shop.assert_unharmed("parallel logins", &before).await;
}

/// Failed logins slow down the address that makes them, never the account's owner elsewhere.
async fn guessing_throttles_the_guesser_not_the_owner(variant: Variant) {
    let shop = shop_with(variant, |s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let before = shop.world().await;
    let login = |from: &'static str, password: &'static str| {
        let url = shop.app.url("/login");
        async move {
            common::client()
                .post(url)
                .header("x-forwarded-for", from)
                .form(&[("username", "vic"), ("password", password)])
                .send()
                .await
                .expect("POST /login")
        }
    };
    let guesser = "198.51.100.7";
    for _ in 0..statecart::web::guard::FREE_FAILURES {
        assert_eq!(
            login(guesser, "guess").await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let res = login(guesser, "guess").await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the guesser waits"
    );
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        login(guesser, PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits from that address: guessing stops"
    );
    assert_eq!(
        login("203.0.113.5", PASSWORD).await.status(),
        StatusCode::SEE_OTHER,
        "the owner, elsewhere, logs in"
    );
    // One subscriber's IPv6 /64 is one address for the throttle.
    for _ in 0..statecart::web::guard::FREE_FAILURES {
        assert_eq!(
            login("2001:db8:7:7::1", "guess").await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    assert_eq!(
        login("2001:db8:7:7:ffff::2", "guess").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    shop.assert_unharmed("throttling", &before).await;
}

/// New guest sessions are limited per address, and forging `X-Forwarded-For` from an
/// untrusted peer buys no fresh address: the flood gets 429 while the victim, logged in from
/// the same address, keeps shopping.
async fn a_guest_flood_with_forged_forwarded_for_meets_the_guest_limit(variant: Variant) {
    let shop = shop_with(variant, |s| s.guest_sessions_per_minute = 5).await;
    let before = shop.world().await;
    let mut limited = 0;
    for i in 0..20 {
        let res = common::client()
            .post(shop.app.url("/cart/add"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .form(&[("product_id", "3"), ("quantity", "1")])
            .send()
            .await
            .expect("POST /cart/add");
        match res.status() {
            StatusCode::SEE_OTHER => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(res.headers().contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("guest add {i} answered {other}"),
        }
    }
    assert!(limited >= 15, "{limited} of 20 forged guests limited");
    shop.assert_unharmed("guest flood", &before).await;
    let res = shop.app.add_to_cart(3, 1).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the victim still shops"
    );
}

for_backends!(a_guest_flood_with_forged_forwarded_for_meets_the_guest_limit => memory, sqlite, postgres, redis);

for_each_backend!(
    bursts_meet_the_login_limit_on_every_spelling_of_the_path,
    parallel_logins_never_fail_with_a_server_error,
    guessing_throttles_the_guesser_not_the_owner,
);
