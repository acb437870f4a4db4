//! A session store that stops answering: 503 with Retry-After, the cookie kept, the stateless
//! half still serving, and full recovery when the store is back.

use crate::common;

use common::{Variant, assert_no_set_cookie, proxy::Proxy, spawn_app};
use reqwest::StatusCode;
use statecart::{Settings, config::DatabaseUrl, db::Db};

/// Makes the `sessions` table vanish (or come back) under a running app.
async fn sessions_table(app: &common::TestApp, present: bool) {
    let db = Db::open(&app.settings.database_url).await.expect("db");
    let sql = if present {
        "ALTER TABLE sessions_away RENAME TO sessions"
    } else {
        "ALTER TABLE sessions RENAME TO sessions_away"
    };
    sqlx::query(sql).execute(&db.pool).await.expect("rename");
    db.close().await;
}

/// Checks a stateful answer while the store is away: 503 with Retry-After, and no cookie change.
fn assert_unavailable(res: &reqwest::Response, what: &str) {
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert!(res.headers().contains_key("retry-after"), "{what}");
    assert_no_set_cookie(res, what);
}

/// Checks, once the store is back, that the browser kept its `cookie` and is still logged in.
async fn assert_the_same_session_goes_on(app: &common::TestApp, cookie: &str, what: &str) {
    assert_eq!(
        app.cookie().as_deref(),
        Some(cookie),
        "{what}: the browser kept its cookie"
    );
    assert!(
        app.is_logged_in(&app.client).await,
        "{what}: the same session goes on"
    );
}

/// Checks that the catalog pages answer while `what` is away.
async fn the_catalog_serves_without(app: &common::TestApp, what: &str) {
    for path in [
        "/",
        "/products",
        "/products/1",
        "/products/2",
        "/products.json",
    ] {
        let status = app.get(path).await.status();
        assert_eq!(status, StatusCode::OK, "{path} without {what}");
    }
}

/// The `sessions` table goes away under a running app (on either dialect) and comes back.
async fn a_database_session_store_outage_answers_503_and_loses_nothing(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("vera").await;
    let cookie = app.cookie().expect("cookie");

    sessions_table(&app, false).await;
    for path in ["/account", "/session", "/session.json"] {
        assert_unavailable(&app.get(path).await, path);
    }
    let res = app.post_form("/logout", &[]).await;
    assert_unavailable(&res, "logout during an outage");
    let page = app.page("/account").await;
    assert!(
        page.contains("The session store is not answering"),
        "a page a person understands"
    );

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: serde_json::Value = health.json().await.expect("json");
    assert_eq!(health["session_store"], "down");
    the_catalog_serves_without(&app, "the session store").await;

    sessions_table(&app, true).await;
    assert_the_same_session_goes_on(&app, &cookie, "sessions table").await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

for_backends!(a_database_session_store_outage_answers_503_and_loses_nothing => sqlite, postgres);

/// Retries `check` for a bounded time: a reconnecting client may need a moment after the
/// service returns.
async fn within_seconds<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// While the store is unreachable: 503 + Retry-After on stateful pages, no cookie change, a
/// checkout that changes nothing; afterwards the same session and cart, and checkout works.
async fn outage_and_recovery(app: &common::TestApp, proxy: &Proxy, what: &str) {
    app.register("xena").await;
    app.add_to_cart(2, 2).await;
    let cookie = app.cookie().expect("cookie");
    let stock = app.stock_of(2).await;

    proxy.close();
    for path in ["/cart", "/session.json"] {
        assert_unavailable(&app.get(path).await, &format!("{what}: {path}"));
    }
    let res = app.post_form("/checkout", &[]).await;
    assert_unavailable(&res, &format!("{what}: checkout during an outage"));
    let health = app.get("/healthz").await;
    assert_eq!(
        health.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: healthz"
    );

    proxy.open().await;
    let back = within_seconds(15, || async {
        app.get("/healthz").await.status() == StatusCode::OK
    })
    .await;
    assert!(back, "{what}: the app recovers by itself");
    assert_the_same_session_goes_on(app, &cookie, what).await;
    assert_eq!(
        app.cart_of(&app.client).await,
        [(2, 2)],
        "{what}: the cart is intact"
    );
    assert_eq!(
        app.stock_of(2).await,
        stock,
        "{what}: the refused checkout took no stock"
    );
    let res = app.post_form("/checkout", &[]).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{what}: checkout works again"
    );
    assert_eq!(app.stock_of(2).await, stock - 2);
}

/// The setting that names a service's URL (`scheme://[user@]host[:port][/rest]`).
struct UrlSetting {
    get: fn(&Settings) -> String,
    set: fn(&mut Settings, String),
    default_port: u16,
}

const REDIS: UrlSetting = UrlSetting {
    get: |s| s.redis_url.clone(),
    set: |s, url| s.redis_url = url,
    default_port: 6379,
};

const POSTGRES: UrlSetting = UrlSetting {
    get: |s| s.database_url.as_str().to_owned(),
    set: |s, url| s.database_url = DatabaseUrl::parse(&url).expect("a PostgreSQL URL"),
    default_port: 5432,
};

/// An app of `variant` that reaches its service through a proxy the test can close: the
/// service's URL is pointed at the proxy, which forwards to the service's address.
async fn behind_a_proxy(variant: Variant, setting: &UrlSetting) -> (common::TestApp, Proxy) {
    let (settings, data, proxy) = settings_behind_a_proxy(variant, setting).await;
    (common::start(settings, data).await, proxy)
}

/// Settings of `variant` whose service is reached through a proxy, not started yet.
async fn settings_behind_a_proxy(
    variant: Variant,
    setting: &UrlSetting,
) -> (Settings, common::DataDir, Proxy) {
    let (mut settings, data) = common::prepare(variant).await;
    let url = &(setting.get)(&settings);
    let host_start = url.find("://").expect("scheme://") + 3;
    let authority_end = url[host_start..]
        .find('/')
        .map_or(url.len(), |slash| host_start + slash);
    let host_start = url[host_start..authority_end]
        .rfind('@')
        .map_or(host_start, |at| host_start + at + 1);
    let host_port = &url[host_start..authority_end];
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{}", setting.default_port)
    };
    let target = host_port
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap_or_else(|err| panic!("host:port in {url}: {err}"));
    let proxy = Proxy::start(target).await;
    let through_proxy = format!(
        "{}127.0.0.1:{}{}",
        &url[..host_start],
        proxy.port(),
        &url[authority_end..]
    );
    (setting.set)(&mut settings, through_proxy);
    (settings, data, proxy)
}

/// Redis connects lazily: an instance started while it is away listens, but says "starting"
/// (503) until Redis answers, then ready, and serves stateful pages at once.
#[tokio::test]
async fn an_instance_started_while_redis_is_away_says_starting_until_redis_answers() {
    if !Variant::Redis.is_available() {
        return;
    }
    let (settings, data, proxy) = settings_behind_a_proxy(Variant::Redis, &REDIS).await;
    proxy.close();
    let app = common::start(settings, data).await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: serde_json::Value = res.json().await.expect("json");
    assert_eq!(health["status"], "starting");
    assert_eq!(health["session_store"], "down");

    proxy.open().await;
    let ready = within_seconds(15, || async {
        app.get("/healthz").await.status() == StatusCode::OK
    })
    .await;
    assert!(ready, "ready once Redis answers");
    app.register("ursula").await;
    assert!(app.is_logged_in(&app.client).await);
}

/// The outage of `variant`'s service (skipped when it is not configured): the outage and the
/// recovery, then the service goes away again and the catalog pages keep serving. Returns the
/// app with its proxy still closed.
async fn outage_of(variant: Variant, setting: &UrlSetting) -> Option<(common::TestApp, Proxy)> {
    if !variant.is_available() {
        return None;
    }
    let (app, proxy) = behind_a_proxy(variant, setting).await;
    let what = format!("{variant:?}");
    outage_and_recovery(&app, &proxy, &what).await;
    proxy.close();
    the_catalog_serves_without(&app, &what).await;
    Some((app, proxy))
}

/// The stateless half never needed Redis.
#[tokio::test]
async fn redis_unreachable_then_back_answers_503_then_continues_the_same_session() {
    if let Some((_app, proxy)) = outage_of(Variant::Redis, &REDIS).await {
        proxy.open().await;
    }
}

/// Catalog pages come from the in-memory snapshot: they keep serving while the database is
/// down (soft state: the last catalog this instance read).
#[tokio::test]
async fn postgres_unreachable_then_back_answers_503_then_continues_the_same_session() {
    let Some((app, proxy)) = outage_of(Variant::Postgres, &POSTGRES).await else {
        return;
    };
    // What needs the database answers 503, never hangs: the health check says so (a hang
    // would end in the test client's own timeout, not in this answer).
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"), "healthz");
    // A login needs the database as well: the documented 503, never a 500.
    let res = app
        .log_in_as(&common::client(), "xena", common::PASSWORD)
        .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "login");
    assert!(res.headers().contains_key("retry-after"), "login");
    proxy.open().await;
}
