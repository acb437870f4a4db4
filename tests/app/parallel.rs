//! Parallel requests of one session: every acknowledged change is kept on the server-side
//! backends (also across two instances), a logout still wins every race, and the cookie
//! backend loses exactly what its README row says.

use crate::common;

use std::collections::HashMap;

use common::{
    TestApp, Variant, body, client_with_cookie, session_cookie, spawn_app, spawn_app_with,
};
use futures_util::future::join_all;
use reqwest::StatusCode;

/// Requests sent at once per round: a double click times six.
const PARALLEL: usize = 12;
const ROUNDS: usize = 5;

/// The seeded catalog's first `PARALLEL` products, with stock for every round.
async fn products_in_stock(app: &TestApp) -> Vec<i64> {
    let products: Vec<serde_json::Value> =
        app.get("/products.json").await.json().await.expect("json");
    let ids: Vec<i64> = products
        .iter()
        .filter_map(|p| p["id"].as_i64())
        .take(PARALLEL)
        .collect();
    assert_eq!(
        ids.len(),
        PARALLEL,
        "the seeded catalog has enough products"
    );
    for &id in &ids {
        app.set_stock_elsewhere(id, 1000).await;
    }
    for &id in &ids {
        app.wait_for_stock(id, 1000).await;
    }
    ids
}

fn add_form(product_id: i64) -> [(&'static str, String); 2] {
    [
        ("product_id", product_id.to_string()),
        ("quantity", "1".to_owned()),
    ]
}

/// Sends one add per product at once with the same session cookie, spread over `apps`;
/// returns the products whose add was acknowledged (303), and checks no answer was a 5xx
/// other than the documented 503 "busy".
async fn parallel_adds(apps: &[&TestApp], cookie: &str, ids: &[i64]) -> Vec<i64> {
    let sends = ids.iter().enumerate().map(|(i, &id)| {
        let app = apps[i % apps.len()];
        let client = client_with_cookie(cookie);
        async move {
            let res = client
                .post(app.url("/cart/add"))
                .form(&add_form(id))
                .send()
                .await
                .expect("POST");
            let status = res.status();
            (id, status)
        }
    });
    let mut acked = Vec::new();
    for (id, status) in join_all(sends).await {
        match status {
            StatusCode::SEE_OTHER => acked.push(id),
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("add of {id} answered {other}"),
        }
    }
    acked
}

/// `ROUNDS` rounds of [`parallel_adds`]; most must be acknowledged, or "nothing lost" would
/// hold of a server that refused everything.
async fn rounds_of_parallel_adds(apps: &[&TestApp], cookie: &str, ids: &[i64]) -> Vec<i64> {
    let mut acked = Vec::new();
    for _ in 0..ROUNDS {
        acked.extend(parallel_adds(apps, cookie, ids).await);
    }
    assert!(
        acked.len() >= PARALLEL * ROUNDS / 2,
        "most adds are acknowledged, not refused as busy: {}",
        acked.len()
    );
    acked
}

fn count(acked: impl IntoIterator<Item = i64>) -> HashMap<i64, u64> {
    let mut counts = HashMap::new();
    for id in acked {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

async fn cart_with(app: &TestApp, cookie: &str) -> HashMap<i64, u64> {
    app.cart_of(&client_with_cookie(cookie))
        .await
        .into_iter()
        .collect()
}

async fn parallel_adds_of_distinct_products_lose_nothing(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("para").await;
    let cookie = app.cookie().expect("session cookie");
    let ids = products_in_stock(&app).await;
    let acked = rounds_of_parallel_adds(&[&app], &cookie, &ids).await;
    assert_eq!(
        cart_with(&app, &cookie).await,
        count(acked),
        "every acknowledged add is in the cart, and nothing else"
    );
}

async fn parallel_adds_on_two_instances_lose_nothing(variant: Variant) {
    let a = spawn_app(variant).await;
    let b = common::start(a.settings.clone(), a.data_dir.shared()).await;
    a.register("twins").await;
    let cookie = a.cookie().expect("session cookie");
    let ids = products_in_stock(&a).await;
    let acked = rounds_of_parallel_adds(&[&a, &b], &cookie, &ids).await;
    let expected = count(acked);
    assert_eq!(cart_with(&a, &cookie).await, expected);
    assert_eq!(
        cart_with(&b, &cookie).await,
        expected,
        "both instances agree"
    );
}

/// Adds, quantity changes and page reads (which refresh last activity) interleaved.
async fn mixed_adds_updates_and_reads_lose_nothing(variant: Variant) {
    // Last activity is rewritten every second, so reads write too.
    let app = spawn_app_with(variant, |s| {
        s.idle_timeout = std::time::Duration::from_secs(30)
    })
    .await;
    app.register("mixer").await;
    let cookie = app.cookie().expect("session cookie");
    let ids = products_in_stock(&app).await;
    let (adds, updates) = ids.split_at(PARALLEL / 2);
    // The lines that will be updated start with one unit.
    for &id in updates {
        assert_eq!(app.add_to_cart(id, 1).await.status(), StatusCode::SEE_OTHER);
    }
    let mut want: HashMap<i64, u64> = updates.iter().map(|&id| (id, 1)).collect();
    let (mut writes, mut acknowledged) = (0, 0);
    for round in 0..3_u64 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let quantity = (round + 2).to_string();
        let mut sends = Vec::new();
        for &id in adds {
            let client = client_with_cookie(&cookie);
            let url = app.url("/cart/add");
            sends.push(tokio::spawn(async move {
                let res = client.post(url).form(&add_form(id)).send().await;
                (id, None, res.expect("POST").status())
            }));
        }
        for &id in updates {
            let client = client_with_cookie(&cookie);
            let url = app.url("/cart/update");
            let quantity = quantity.clone();
            sends.push(tokio::spawn(async move {
                let form = [
                    ("product_id", id.to_string()),
                    ("quantity", quantity.clone()),
                ];
                let res = client.post(url).form(&form).send().await;
                (id, Some(quantity), res.expect("POST").status())
            }));
        }
        for _ in 0..4 {
            let client = client_with_cookie(&cookie);
            let url = app.url("/cart");
            sends.push(tokio::spawn(async move {
                let res = client.get(url).send().await.expect("GET");
                (0, None, res.status())
            }));
        }
        for sent in join_all(sends).await {
            let (id, quantity, status) = sent.expect("task");
            if id != 0 {
                writes += 1;
                acknowledged += usize::from(status == StatusCode::SEE_OTHER);
            }
            match (id, status) {
                (0, StatusCode::OK) => {}
                (_, StatusCode::SEE_OTHER) => match quantity {
                    Some(q) => {
                        want.insert(id, q.parse().expect("quantity"));
                    }
                    None => *want.entry(id).or_insert(0) += 1,
                },
                (_, StatusCode::SERVICE_UNAVAILABLE) => {}
                (id, other) => panic!("request for {id} answered {other}"),
            }
        }
    }
    assert!(
        acknowledged >= writes / 2,
        "most writes are acknowledged, not refused as busy: {acknowledged} of {writes}"
    );
    assert_eq!(cart_with(&app, &cookie).await, want);
}

async fn a_logout_racing_cart_writes_still_ends_the_session(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("racer").await;
    let cookie = app.cookie().expect("session cookie");
    let ids = products_in_stock(&app).await;
    let apps = [&app];
    let adds = parallel_adds(&apps, &cookie, &ids);
    let logout = async {
        let res = client_with_cookie(&cookie)
            .post(app.url("/logout"))
            .send()
            .await
            .expect("POST");
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
    };
    tokio::join!(adds, logout);
    assert!(
        !app.is_logged_in(&client_with_cookie(&cookie)).await,
        "no write racing the logout brought the session back"
    );
    // The store holds no login of this user either (a racing add may leave a guest cart, as
    // any add without a session does): a fresh login finds itself alone.
    let again = app.login_new_client("racer").await;
    let page = body(app.get_as(&again, "/account").await).await;
    let listed = page
        .split(r#"data-test="sessions""#)
        .nth(1)
        .and_then(|table| table.split("<tbody>").nth(1))
        .and_then(|rows| rows.split("</tbody>").next())
        .map(|rows| rows.matches("<tr").count());
    assert_eq!(listed, Some(1), "only the fresh login is listed: {page}");
}

/// The cookie backend's documented trade-off: every answer carries a whole new cookie made
/// from the one the request brought, so of parallel changes only the last answer's survives.
async fn on_the_cookie_backend_the_last_parallel_answer_wins(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("crumbs").await;
    let cookie = app.cookie().expect("session cookie");
    let ids = products_in_stock(&app).await;
    let sends = ids.iter().map(|&id| {
        let client = client_with_cookie(&cookie);
        let url = app.url("/cart/add");
        async move {
            let res = client.post(url).form(&add_form(id)).send().await;
            let res = res.expect("POST");
            assert_eq!(res.status(), StatusCode::SEE_OTHER, "acknowledged");
            session_cookie(&res).expect("a new cookie")
        }
    });
    let answers = join_all(sends).await;
    for answer in &answers {
        assert_eq!(
            cart_with(&app, answer).await.len(),
            1,
            "each answer holds its own change only"
        );
    }
    let last = answers.last().expect("answers");
    let kept = cart_with(&app, last).await;
    assert_eq!(
        kept.len(),
        1,
        "the browser keeps one answer: {} of {PARALLEL} acknowledged adds are lost",
        PARALLEL - 1
    );
    let json = app.session_json_of(&client_with_cookie(last)).await;
    assert!(
        json["parallel_writes"]
            .as_str()
            .is_some_and(|s| s.starts_with("the last one wins")),
        "{json}"
    );
}

async fn the_inspector_says_server_side_backends_lose_no_parallel_write(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("reader").await;
    let json = app.session_json().await;
    assert!(
        json["parallel_writes"]
            .as_str()
            .is_some_and(|s| s.starts_with("none lost")),
        "{json}"
    );
    let page = app.page("/session").await;
    assert!(page.contains("Parallel writes"), "{page}");
}

for_backends!(parallel_adds_of_distinct_products_lose_nothing => memory, sqlite, postgres, redis, redis_cluster);
// Memory is one process's: a second instance does not share it (see instances.rs).
for_backends!(parallel_adds_on_two_instances_lose_nothing => sqlite, postgres, redis, redis_cluster);
for_backends!(mixed_adds_updates_and_reads_lose_nothing => memory, sqlite, postgres, redis);
// The cookie backend cannot revoke at all (see sessions.rs).
for_backends!(a_logout_racing_cart_writes_still_ends_the_session => memory, sqlite, postgres, redis, redis_cluster);
for_backends!(on_the_cookie_backend_the_last_parallel_answer_wins => cookie);
for_backends!(the_inspector_says_server_side_backends_lose_no_parallel_write => memory, sqlite, postgres, redis);
