//! A session store that stops answering: 503 with Retry-After, the cookie kept, the stateless
//! half still serving, and full recovery when the store is back.

mod common;

use common::{Variant, assert_no_set_cookie, spawn_app};
use reqwest::StatusCode;
use statecart::db::Db;

/// Makes the `sessions` table vanish (or come back) under a running app.
async fn sessions_table(app: &common::TestApp, present: bool) {
    let db = Db::connect(&app.settings.database_url).await.expect("db");
    let sql = if present {
        "ALTER TABLE sessions_away RENAME TO sessions"
    } else {
        "ALTER TABLE sessions RENAME TO sessions_away"
    };
    sqlx::query(sql).execute(&db.pool).await.expect("rename");
    db.close().await;
}

#[tokio::test]
async fn a_database_session_store_outage_answers_503_and_loses_nothing() {
    let app = spawn_app(Variant::Sqlite).await;
    app.register("vera").await;
    let cookie = app.cookie().expect("cookie");

    sessions_table(&app, false).await;
    for path in ["/account", "/session", "/session.json"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(res.headers().contains_key("retry-after"), "{path}");
        assert_no_set_cookie(&res, path);
    }
    let res = app.post_form("/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_no_set_cookie(&res, "logout during an outage");
    let page = app.get("/account").await.text().await.expect("body");
    assert!(
        page.contains("The session store is not answering"),
        "a page a person understands"
    );

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: serde_json::Value = health.json().await.expect("json");
    assert_eq!(health["session_store"], "down");
    for path in ["/", "/products", "/products/1", "/products.json"] {
        assert_eq!(
            app.get(path).await.status(),
            StatusCode::OK,
            "{path} needs no session store"
        );
    }

    sessions_table(&app, true).await;
    assert_eq!(
        app.cookie().as_deref(),
        Some(cookie.as_str()),
        "the browser kept its cookie"
    );
    assert!(
        app.is_logged_in(&app.client).await,
        "the same session goes on"
    );
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}
