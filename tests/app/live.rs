//! Soft state: live cart updates for a lease, then polling; the admin tools that change the
//! catalog.

use crate::common;

use std::{pin::Pin, process::Command, time::Duration};

use common::{PASSWORD, TestApp, Variant, spawn_app_with};
use futures_util::{Stream, StreamExt as _};
use reqwest::StatusCode;
use serde_json::Value;
use statecart::Settings;

/// A Server-Sent Events reader over a streaming response.
struct Sse {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<actix_web::web::Bytes>> + Send>>,
    buffer: String,
}

impl Sse {
    async fn open(client: &reqwest::Client, url: String) -> Self {
        let res = client.get(url).send().await.expect("GET /cart/live");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Self {
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event (name, JSON data), or `None` when the server closed the stream.
    /// Fails the test if nothing comes within `secs`.
    async fn next(&mut self, secs: u64) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if let Some(name) = name {
                    return Some((name, serde_json::from_str(&data).expect("JSON data")));
                }
                // A comment (heartbeat): keep reading.
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {secs} s"));
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Opens a stream and reads its first event, the lease.
    async fn lease(client: &reqwest::Client, url: String) -> (Self, Value) {
        let mut stream = Self::open(client, url).await;
        let lease = stream.expect("lease", 5).await;
        (stream, lease)
    }

    /// The next event that is not a `change` of some other product, by name.
    async fn expect(&mut self, name: &str, secs: u64) -> Value {
        let (got, data) = self.next(secs).await.expect("the stream is open");
        assert_eq!(got, name, "{data}");
        data
    }
}

fn statecart(settings: &Settings) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_statecart"));
    for (key, _) in std::env::vars() {
        if key.starts_with("STATECART_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("STATECART_DATA_DIR", &settings.data_dir)
        .env("STATECART_DATABASE_URL", settings.database_url.as_str())
        .env("RUST_LOG", "warn");
    cmd
}

/// Runs `statecart admin <args>` on the app's database; returns (exit code, stderr).
fn admin(app: &TestApp, args: &[&str]) -> (Option<i32>, String) {
    let out = statecart(&app.settings)
        .arg("admin")
        .args(args)
        .output()
        .expect("run statecart admin");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn live_app(variant: Variant, lease_secs: u64) -> TestApp {
    spawn_app_with(variant, |s| {
        s.live_lease = Duration::from_secs(lease_secs);
        s.poll_interval = Duration::from_secs(7);
        s.login_rate_limit_per_minute = 0;
        s.admin_users = vec!["root".to_owned()];
    })
    .await
}

/// `username` registers, puts one of each of `products` in the cart and opens the cart's live
/// stream: returns the stream and its lease.
async fn watch_cart(app: &TestApp, username: &str, products: &[i64]) -> (Sse, Value) {
    app.register(username).await;
    for &id in products {
        app.add_to_cart(id, 1).await;
    }
    Sse::lease(&app.client, app.url("/cart/live")).await
}

async fn a_change_reaches_the_cart_after_another_users_checkout_and_an_admin_price(
    variant: Variant,
) {
    let app = live_app(variant, 60).await;
    let (mut live, lease) = watch_cart(&app, "una", &[1, 2]).await;
    let start = lease["version"].as_i64().expect("version");
    assert!(lease["expires_at"].as_str().is_some());

    let rival = TestApp::client_registered(&app, "vic").await;
    app.buy_as(&rival, 1, 3).await;
    let change = live.expect("change", 10).await;
    assert_eq!(change["product_id"], 1);
    assert_eq!(change["stock"], 24 - 3);
    assert!(change["version"].as_i64() > Some(start));

    let (code, stderr) = admin(&app, &["set-price", "2", "777"]);
    assert_eq!(code, Some(0), "{stderr}");
    let change = live.expect("change", 10).await;
    assert_eq!(
        (change["product_id"].clone(), change["price_cents"].clone()),
        (2.into(), 777.into())
    );

    let json = app.session_json().await;
    assert!(
        json["live_lease_expires_at"].as_str().is_some(),
        "the inspector shows the lease"
    );
}

async fn a_lease_ends_with_lease_expired_and_the_stream_closes(variant: Variant) {
    let app = live_app(variant, 2).await;
    let (mut live, _) = watch_cart(&app, "wes", &[3]).await;
    let end = live.expect("lease-expired", 10).await;
    assert_eq!(end["poll_after_secs"], 7);
    assert!(end["version"].as_i64().is_some());
    assert_eq!(live.next(10).await, None, "the server closes the stream");
    let json = app.session_json().await;
    assert!(
        json["live_lease_expires_at"].is_null(),
        "the server forgot the lease"
    );
}

async fn polling_returns_exactly_the_changes_since_a_version(variant: Variant) {
    let app = live_app(variant, 60).await;
    app.register("xia").await;
    app.add_to_cart(1, 1).await;
    app.add_to_cart(3, 1).await;
    let start = app.json("/cart/changes?since=0").await;
    let v0 = start["version"].as_i64().expect("version");
    assert_eq!(start["poll_after_secs"], 7);

    for (id, cents) in [("1", "1111"), ("2", "2222"), ("3", "3333")] {
        assert_eq!(admin(&app, &["set-price", id, cents]).0, Some(0));
    }
    let since = app.json(&format!("/cart/changes?since={v0}")).await;
    let changes = since["changes"].as_array().expect("changes");
    let got: Vec<(i64, i64)> = changes
        .iter()
        .map(|c| {
            (
                c["product_id"].as_i64().unwrap_or(0),
                c["price_cents"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(1, 1111), (3, 3333)],
        "only the cart's products, oldest first"
    );
    let after_first = changes[0]["version"].as_i64().expect("version");
    let later = app
        .json(&format!("/cart/changes?since={after_first}"))
        .await;
    assert_eq!(later["changes"].as_array().map(Vec::len), Some(1));
    assert!(later["version"].as_i64() >= changes[1]["version"].as_i64());

    for bad in ["", "?since=", "?since=abc", "?since=-1"] {
        let res = app.get(&format!("/cart/changes{bad}")).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = res.json().await.expect("a JSON error");
        assert!(body["error"].as_str().is_some());
    }
}

async fn the_registry_is_bounded_and_ends_the_oldest_lease_first(variant: Variant) {
    let app = spawn_app_with(variant, |s| {
        s.live_max_leases_per_user = 2;
        s.live_lease = Duration::from_secs(60);
    })
    .await;
    let (mut first, _) = watch_cart(&app, "yan", &[1]).await;
    // Two more streams of the same user, kept open to the end.
    let (_second, _) = Sse::lease(&app.client, app.url("/cart/live")).await;
    let (_third, _) = Sse::lease(&app.client, app.url("/cart/live")).await;
    first.expect("lease-expired", 5).await;
    assert_eq!(first.next(5).await, None);
    assert_eq!(app.metric("statecart_live_leases_active").await, 2);
    assert_eq!(app.metric("statecart_live_leases_expired_total").await, 1);
}

async fn a_restart_drops_every_lease_and_polling_still_tells_the_truth(variant: Variant) {
    let app = live_app(variant, 60).await;
    let (mut live, lease) = watch_cart(&app, "zed", &[4]).await;
    let version = lease["version"].as_i64().expect("version");
    let app = app.restart_keeping_client().await;
    // The stopping server ended the lease; the stream is closed.
    assert_eq!(live.expect("lease-expired", 10).await["poll_after_secs"], 7);
    assert_eq!(live.next(10).await, None);
    assert_eq!(admin(&app, &["set-stock", "4", "2"]).0, Some(0));
    if variant != Variant::Memory {
        let polled = app.json(&format!("/cart/changes?since={version}")).await;
        assert_eq!(
            polled["changes"][0]["stock"], 2,
            "polling reads the database: {polled}"
        );
    }
    assert_eq!(app.metric("statecart_live_leases_active").await, 0);
}

async fn admin_commands_refuse_bad_values_and_change_nothing(variant: Variant) {
    let app = live_app(variant, 60).await;
    let before = app.json("/products.json").await;
    for args in [
        ["set-price", "1", "-5"],
        ["set-price", "1", "12.50"],
        ["set-price", "abc", "100"],
        ["set-price", "999999", "100"],
        ["set-stock", "1", "lots"],
        ["set-stock", "1", "-1"],
        ["set-stock", "0", "1"],
    ] {
        let (code, stderr) = admin(&app, &args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("nothing was changed"), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    }
    let after = app.json("/products.json").await;
    assert_eq!(before, after);
}

async fn the_admin_page_is_for_admins_only_and_refuses_bad_values(variant: Variant) {
    let app = live_app(variant, 60).await;
    app.register("pat").await;
    assert_eq!(
        app.get("/admin/products").await.status(),
        StatusCode::FORBIDDEN
    );
    let res = app
        .post_form(
            "/admin/products",
            &[("product_id", "1"), ("price_cents", "1")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // `admin_users` names root, but root had no account at start: registering grants nothing.
    let root = TestApp::client_registered(&app, "root").await;
    let page = app.get_as(&root, "/admin/products").await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    assert_eq!(admin(&app, &["grant", "root"]).0, Some(0));
    let page = app.get_as(&root, "/admin/products").await;
    assert_eq!(page.status(), StatusCode::OK);
    let before = app.json("/products.json").await;
    for (form, status) in [
        (
            vec![("product_id", "1"), ("price_cents", "-1")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            vec![("product_id", "1"), ("stock", "many")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            vec![("product_id", "1"), ("price_cents", "100"), ("stock", "-3")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (vec![("product_id", "1")], StatusCode::UNPROCESSABLE_ENTITY),
        (
            vec![("product_id", "999999"), ("stock", "1")],
            StatusCode::NOT_FOUND,
        ),
        (
            vec![("product_id", "x"), ("stock", "1")],
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let res = app.post_form_as(&root, "/admin/products", &form).await;
        assert_eq!(res.status(), status, "{form:?}");
    }
    let after = app.json("/products.json").await;
    assert_eq!(before, after, "refused changes changed nothing");

    let form = [("product_id", "1"), ("price_cents", "999"), ("stock", "4")];
    let res = app.post_form_as(&root, "/admin/products", &form).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let product = app.page("/products/1").await;
    assert!(product.contains("$9.99") && product.contains("Only 4 left"));
}

async fn admin_is_a_role_of_an_account_granted_and_revoked_by_command(variant: Variant) {
    let app = live_app(variant, 60).await;
    // Whoever registers a name from admin_users after the start, in any letter case, is no admin.
    let squatter = TestApp::client_registered(&app, "ROOT").await;
    let status =
        async |client: &reqwest::Client| app.get_as(client, "/admin/products").await.status();
    assert_eq!(status(&squatter).await, StatusCode::FORBIDDEN);

    let (code, stderr) = admin(&app, &["grant", "nobody-here"]);
    assert_eq!(code, Some(2), "an unknown account is refused: {stderr}");
    assert!(stderr.contains("nobody-here"), "{stderr}");
    assert_eq!(admin(&app, &["grant", "root"]).0, Some(0));
    assert_eq!(status(&squatter).await, StatusCode::OK);
    assert_eq!(admin(&app, &["revoke", "Root"]).0, Some(0));
    assert_eq!(
        status(&squatter).await,
        StatusCode::FORBIDDEN,
        "a revoke holds at once, for sessions already logged in"
    );

    // admin_users grants the accounts that exist when the server starts.
    let app = app.restart().await;
    let root = app.login_new_client("ROOT").await;
    let res = app.get_as(&root, "/admin/products").await;
    assert_eq!(res.status(), StatusCode::OK, "granted at start");
}

async fn an_old_login_confirms_price_changes_with_the_password(variant: Variant) {
    let app = spawn_app_with(variant, |s| {
        s.admin_reauth_after = Duration::ZERO;
        s.login_rate_limit_per_minute = 0;
    })
    .await;
    app.register("root").await;
    assert_eq!(admin(&app, &["grant", "root"]).0, Some(0));
    let page = app.page("/admin/products").await;
    assert!(
        page.contains("data-test=\"admin-password\""),
        "the form asks"
    );
    let before = app.json("/products.json").await;
    for password in [None, Some(""), Some("not the password")] {
        let mut form = vec![("product_id", "1"), ("price_cents", "1")];
        form.extend(password.map(|p| ("password", p)));
        let res = app.post_form("/admin/products", &form).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{password:?}");
    }
    let after = app.json("/products.json").await;
    assert_eq!(before, after, "no change without the password");
    let res = app
        .post_form(
            "/admin/products",
            &[
                ("product_id", "1"),
                ("price_cents", "1"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let product = app.page("/products/1").await;
    assert!(product.contains("$0.01"));
}

for_each_backend!(
    a_change_reaches_the_cart_after_another_users_checkout_and_an_admin_price,
    admin_is_a_role_of_an_account_granted_and_revoked_by_command,
    an_old_login_confirms_price_changes_with_the_password,
    a_lease_ends_with_lease_expired_and_the_stream_closes,
    polling_returns_exactly_the_changes_since_a_version,
    the_registry_is_bounded_and_ends_the_oldest_lease_first,
    a_restart_drops_every_lease_and_polling_still_tells_the_truth,
    admin_commands_refuse_bad_values_and_change_nothing,
    the_admin_page_is_for_admins_only_and_refuses_bad_values,
);

/// Two instances on one database (and session store): a change made on one reaches a lease
/// held on the other. Memory is left out: its sessions are one process's.
async fn a_checkout_on_one_instance_reaches_a_subscriber_on_another(variant: Variant) {
    let a = live_app(variant, 60).await;
    let b = common::start(a.settings.clone(), a.data_dir.shared()).await;
    a.register("ava").await;
    a.add_to_cart(5, 1).await;
    // The same browser, now talking to instance b (same database, same key).
    let (mut live, _) = Sse::lease(&a.client, b.url("/cart/live")).await;
    let buyer = TestApp::client_registered(&a, "bob").await;
    a.buy_as(&buyer, 5, 2).await;
    let change = live.expect("change", 10).await;
    assert_eq!(
        (change["product_id"].clone(), change["stock"].clone()),
        (5.into(), 38.into())
    );
}

for_backends!(a_checkout_on_one_instance_reaches_a_subscriber_on_another => cookie, sqlite, postgres, redis);
