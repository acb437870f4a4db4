//! Where you are logged in (/account): device labels, ending one session, the per-user cap, and
//! "last active" written without turning reads into writes. Every backend that can list
//! sessions runs these; `::cookie` runs the cookie backend with `cookie_revocation`, which
//! keeps the list in the app database (plain `cookie` cannot, and its page says so).

use std::sync::Arc;

use reqwest::{StatusCode, cookie::Jar};
use statecart::config::SessionBackend;

use crate::common::{
    self, PASSWORD, TestApp, Variant, body, client_builder, location, spawn_app_with,
};

const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36";
const SAFARI_MACOS: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 \
     (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

/// An app of `variant` that can list sessions: the cookie backend gets `cookie_revocation`.
async fn listing_app(variant: Variant, change: impl FnOnce(&mut statecart::Settings)) -> TestApp {
    spawn_app_with(variant, |s| {
        if s.session_backend == SessionBackend::Cookie {
            s.cookie_revocation = true;
        }
        s.login_rate_limit_per_minute = 0;
        change(s);
    })
    .await
}

/// A browser: a cookie-keeping client that sends `user_agent`.
struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
}

impl Browser {
    fn new(user_agent: &str) -> Self {
        let jar = Arc::new(Jar::default());
        let client = client_builder()
            .user_agent(user_agent)
            .cookie_provider(Arc::clone(&jar))
            .build()
            .expect("client");
        Self { client, jar }
    }

    /// This browser logs in as `username` and gets the 303.
    async fn log_in(app: &TestApp, user_agent: &str, username: &str) -> Self {
        let browser = Self::new(user_agent);
        let res = app.log_in_as(&browser.client, username, PASSWORD).await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "login from {user_agent}"
        );
        browser
    }

    /// /account as this browser sees it, after checking the 200.
    async fn account(&self, app: &TestApp) -> String {
        let res = app.get_as(&self.client, "/account").await;
        assert_eq!(res.status(), StatusCode::OK, "GET /account");
        body(res).await
    }

    fn cookie(&self, app: &TestApp) -> String {
        common::cookie_in(&self.jar, &app.address).expect("a session cookie")
    }
}

/// One row of the sessions table: its device label, the handle its "Log out" posts (none for
/// this browser's own row), and whether it is this browser's.
#[derive(Debug)]
struct Row {
    device: String,
    handle: Option<String>,
    current: bool,
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn rows(page: &str) -> Vec<Row> {
    page.split(r#"<tr data-test="session-row""#)
        .skip(1)
        .map(|row| {
            let row = &row[..row.find("</tr>").expect("a closed row")];
            Row {
                device: between(row, r#"data-test="device">"#, "<")
                    .expect("a device cell")
                    .to_owned(),
                handle: between(row, r#"name="session" value=""#, "\"").map(str::to_owned),
                current: row.contains(r#"data-current="true""#),
            }
        })
        .collect()
}

/// Registers `username` and logs that first session out, so only the logins a test makes count.
async fn account_with_no_session(app: &TestApp, username: &str) {
    app.register(username).await;
    let res = app.post_form("/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "logout");
}

/// Three browsers of one user: Firefox on Linux, Chrome on Android, Safari on macOS.
async fn three_devices(app: &TestApp, username: &str) -> [Browser; 3] {
    account_with_no_session(app, username).await;
    [
        Browser::log_in(app, FIREFOX_LINUX, username).await,
        Browser::log_in(app, CHROME_ANDROID, username).await,
        Browser::log_in(app, SAFARI_MACOS, username).await,
    ]
}

/// Every text that would let someone who reads a page take over a session: the cookies, and
/// where the server keeps sessions by a hash of the key, those hashes.
async fn session_secrets(app: &TestApp, browsers: &[&Browser]) -> Vec<String> {
    let mut secrets: Vec<String> = browsers.iter().map(|b| b.cookie(app)).collect();
    if app.settings.session_backend == SessionBackend::Database {
        let db = app.db().await;
        let hashes: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM sessions")
            .fetch_all(&db.pool)
            .await
            .expect("key hashes");
        db.close().await;
        assert!(!hashes.is_empty(), "the sessions are stored");
        secrets.extend(hashes);
    }
    secrets
}

async fn three_logins_show_three_labelled_rows(variant: Variant) {
    let app = listing_app(variant, |_| {}).await;
    let [firefox, _android, _safari] = three_devices(&app, "tilda").await;
    let rows = rows(&firefox.account(&app).await);
    let mut devices: Vec<&str> = rows.iter().map(|r| r.device.as_str()).collect();
    devices.sort_unstable();
    assert_eq!(
        devices,
        ["Chrome on Android", "Firefox on Linux", "Safari on macOS"]
    );
    let current: Vec<&Row> = rows.iter().filter(|r| r.current).collect();
    assert_eq!(current.len(), 1, "{rows:?}");
    assert_eq!(current[0].device, "Firefox on Linux");
    assert_eq!(
        current[0].handle, None,
        "no button to end this very session"
    );
    assert!(
        rows.iter()
            .filter(|r| !r.current)
            .all(|r| r.handle.is_some()),
        "every other session has a Log out button: {rows:?}"
    );
    if variant == Variant::Cookie {
        // The list is what cookie_revocation keeps beyond revocation; /session counts it.
        let json = app.session_json_of(&firefox.client).await;
        assert_eq!(json["revocation"]["listed_sessions"], 3, "{json}");
    }
}

async fn revoking_the_android_row_logs_out_exactly_that_session(variant: Variant) {
    let app = listing_app(variant, |_| {}).await;
    let [firefox, android, safari] = three_devices(&app, "ulla").await;
    let page = firefox.account(&app).await;
    let secrets = session_secrets(&app, &[&firefox, &android, &safari]).await;
    let handle = rows(&page)
        .into_iter()
        .find(|r| r.device == "Chrome on Android")
        .and_then(|r| r.handle)
        .expect("the Android row has a Log out button");

    let res = app
        .post_form_as(
            &firefox.client,
            "/account/sessions/revoke",
            &[("session", &handle)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/account");
    let after = firefox.account(&app).await;
    assert!(
        after.contains("Logged out Chrome on Android"),
        "the notice says which: {after}"
    );
    assert!(!app.is_logged_in(&android.client).await, "Android is out");
    assert!(app.is_logged_in(&firefox.client).await, "Firefox stays");
    assert!(app.is_logged_in(&safari.client).await, "Safari stays");
    let mut left: Vec<String> = rows(&firefox.account(&app).await)
        .into_iter()
        .map(|r| r.device)
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["Firefox on Linux", "Safari on macOS"]);

    // No page a session sees shows a key that could take one over.
    for browser in [&firefox, &safari] {
        for path in ["/account", "/session", "/session.json"] {
            let text = body(app.get_as(&browser.client, path).await).await;
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "{path} shows a session key"
                );
            }
        }
    }
    assert!(!secrets.contains(&handle), "the handle is not a key");
}

async fn an_unknown_foreign_or_malformed_handle_ends_nothing(variant: Variant) {
    let app = listing_app(variant, |_| {}).await;
    let [firefox, android, _safari] = three_devices(&app, "vera").await;
    let mallory = Browser::new(FIREFOX_LINUX);
    app.register_as(&mallory.client, "mallory").await;
    let android_handle = rows(&firefox.account(&app).await)
        .into_iter()
        .find(|r| r.device == "Chrome on Android")
        .and_then(|r| r.handle)
        .expect("Android row");
    let own_handle = {
        // This browser's own id, as the inspector shows its login metadata.
        let page = body(app.get_as(&firefox.client, "/session").await).await;
        between(&page, "&#34;sid&#34;:&#34;", "&#34;")
            .expect("the inspector shows the login's id")
            .to_owned()
    };
    let revoke = |client: &reqwest::Client, handle: &str| {
        let form = [("session", handle.to_owned())];
        client
            .post(app.url("/account/sessions/revoke"))
            .form(&form)
            .send()
    };
    let cases: [(&reqwest::Client, &str, StatusCode, &str); 6] = [
        (
            &mallory.client,
            &android_handle,
            StatusCode::NOT_FOUND,
            "another user's session",
        ),
        (
            &firefox.client,
            "AAAAAAAAAAAAAAAAAAAAAAAA",
            StatusCode::NOT_FOUND,
            "an unknown handle",
        ),
        (
            &firefox.client,
            "",
            StatusCode::BAD_REQUEST,
            "an empty handle",
        ),
        (
            &firefox.client,
            "x' OR '1'='1",
            StatusCode::BAD_REQUEST,
            "SQL",
        ),
        (
            &firefox.client,
            &firefox.cookie(&app),
            StatusCode::BAD_REQUEST,
            "a cookie value",
        ),
        (
            &firefox.client,
            &own_handle,
            StatusCode::UNPROCESSABLE_ENTITY,
            "this very session",
        ),
    ];
    for (client, handle, status, what) in cases {
        let res = revoke(client, handle).await.expect("POST");
        assert_eq!(res.status(), status, "{what}");
        let page = body(res).await;
        assert!(
            page.contains("Nothing was changed."),
            "{what} says so: {page}"
        );
    }
    assert!(
        app.is_logged_in(&android.client).await,
        "Android was not ended"
    );
    assert!(
        app.is_logged_in(&firefox.client).await,
        "Firefox was not ended"
    );
    assert!(
        app.is_logged_in(&mallory.client).await,
        "mallory's own session goes on"
    );
    assert_eq!(
        rows(&firefox.account(&app).await).len(),
        3,
        "all three listed"
    );
}

/// A session touched now: a page read with the touch interval passed records activity.
async fn use_now(app: &TestApp, browser: &Browser) {
    browser.account(app).await;
}

async fn a_login_beyond_the_cap_ends_the_least_recently_active_session_and_no_other(
    variant: Variant,
) {
    // A 30 s idle timeout rewrites "last active" every second, so one pause is enough to make
    // one session the least recently active.
    let app = listing_app(variant, |s| {
        s.max_sessions_per_user = 5;
        s.idle_timeout = std::time::Duration::from_secs(30);
    })
    .await;
    account_with_no_session(&app, "wanda").await;
    let mut browsers = Vec::new();
    for agent in [
        FIREFOX_LINUX,
        CHROME_ANDROID,
        SAFARI_MACOS,
        FIREFOX_LINUX,
        SAFARI_MACOS,
    ] {
        browsers.push(Browser::log_in(&app, agent, "wanda").await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Every session but the Android one is used after the pause.
    for (i, browser) in browsers.iter().enumerate() {
        if i != 1 {
            use_now(&app, browser).await;
        }
    }
    let sixth = Browser::log_in(&app, FIREFOX_LINUX, "wanda").await;

    let page = sixth.account(&app).await;
    assert!(
        page.contains("at most 5 devices")
            && page.contains("ended your least recently active session: Chrome on Android"),
        "the account page says so: {page}"
    );
    assert_eq!(rows(&page).len(), 5, "five sessions remain");
    assert!(
        !sixth.account(&app).await.contains("at most 5 devices"),
        "said once"
    );
    assert!(
        !app.is_logged_in(&browsers[1].client).await,
        "the Android one ended"
    );
    for (i, browser) in browsers.iter().enumerate().filter(|(i, _)| *i != 1) {
        assert!(
            app.is_logged_in(&browser.client).await,
            "session {i} goes on"
        );
    }
}

async fn logins_within_the_cap_end_nothing(variant: Variant) {
    let app = listing_app(variant, |s| s.max_sessions_per_user = 3).await;
    let browsers = three_devices(&app, "xena").await;
    let page = browsers[2].account(&app).await;
    assert!(!page.contains(r#"data-test="capped""#), "{page}");
    for browser in &browsers {
        assert!(app.is_logged_in(&browser.client).await);
    }
}

/// Reading pages within the touch interval (a minute at the default idle timeout) writes
/// nothing: the stored session keeps its version, the cookie is not re-sent.
async fn reading_pages_does_not_rewrite_last_active(variant: Variant) {
    let app = listing_app(variant, |_| {}).await;
    account_with_no_session(&app, "yara").await;
    let browser = Browser::log_in(&app, SAFARI_MACOS, "yara").await;
    let before = stored_version(&app).await;
    for path in ["/account", "/cart", "/orders", "/account"] {
        let res = app.get_as(&browser.client, path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(
            common::set_cookie_header(&res, "statecart").is_none(),
            "{path} re-sent the session cookie"
        );
    }
    assert_eq!(stored_version(&app).await, before, "no write on a read");
}

/// The version of the one stored session where a test can read it (`None` elsewhere).
async fn stored_version(app: &TestApp) -> Option<String> {
    match app.settings.session_backend {
        SessionBackend::Database => {
            let db = app.db().await;
            let v: Vec<(i64, i64)> = sqlx::query_as("SELECT version, last_seen_at FROM sessions")
                .fetch_all(&db.pool)
                .await
                .expect("versions");
            db.close().await;
            Some(format!("{v:?}"))
        }
        SessionBackend::Cookie => {
            let db = app.db().await;
            let v: Vec<i64> = sqlx::query_scalar("SELECT last_seen_at FROM cookie_sessions")
                .fetch_all(&db.pool)
                .await
                .expect("rows");
            db.close().await;
            Some(format!("{v:?}"))
        }
        SessionBackend::Redis => {
            // The stored value starts with its version: a write would change it.
            let client = redis::Client::open(app.settings.redis_url.as_str()).expect("url");
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("redis");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}session:*", app.settings.redis_key_prefix))
                .query_async(&mut conn)
                .await
                .expect("KEYS");
            assert_eq!(keys.len(), 1, "one stored session");
            let value: Option<String> = redis::cmd("GET")
                .arg(&keys[0])
                .query_async(&mut conn)
                .await
                .expect("GET");
            value
        }
        SessionBackend::Memory => None,
    }
}

async fn without_revocation_the_cookie_page_says_what_it_cannot_do(variant: Variant) {
    let app = spawn_app_with(variant, |_| {}).await;
    app.register("zora").await;
    let page = app.page("/account").await;
    assert!(page.contains(r#"data-test="cannot-list""#), "{page}");
    assert!(page.contains("cannot log out one device"), "{page}");
    let res = app
        .post_form(
            "/account/sessions/revoke",
            &[("session", "AAAAAAAAAAAAAAAAAAAAAAAA")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(body(res).await.contains("nothing it could end"));
    assert!(app.is_logged_in(&app.client).await);
}

for_backends!(three_logins_show_three_labelled_rows => cookie, memory, sqlite, postgres, redis);
for_backends!(revoking_the_android_row_logs_out_exactly_that_session => cookie, memory, sqlite, postgres, redis);
for_backends!(an_unknown_foreign_or_malformed_handle_ends_nothing => cookie, memory, sqlite, postgres, redis);
for_backends!(a_login_beyond_the_cap_ends_the_least_recently_active_session_and_no_other => cookie, memory, sqlite, postgres, redis);
for_backends!(logins_within_the_cap_end_nothing => cookie, memory, sqlite, postgres, redis);
// Memory keeps its versions where a test cannot read them; the database, Redis and the cookie
// listing show theirs.
for_backends!(reading_pages_does_not_rewrite_last_active => cookie, sqlite, postgres, redis);
for_backends!(without_revocation_the_cookie_page_says_what_it_cannot_do => cookie);
