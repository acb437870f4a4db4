//! The redis backend on a Redis Cluster (`redis_cluster`): shoppers spread over every master,
//! survive a restart of statecart, and get only 503s while a killed master fails over, then
//! find their session and cart again.

use crate::common;

use std::time::{Duration, Instant};

use common::{TestApp, Variant, services};
use futures_util::future::join_all;
use reqwest::StatusCode;
use statecart::{
    config::SessionBackend,
    sandbox::{ClusterShape, RedisCluster, node_url},
};

/// One scripted shopper: a browser of its own and the account it registered.
struct Shopper {
    client: reqwest::Client,
    name: String,
    product: i64,
}

/// Registers, logs in again from the same browser, adds a product, views the cart and the
/// account; every answer must be the expected one (so no 5xx).
async fn shop(app: &TestApp, n: usize) -> Shopper {
    let name = format!("shopper{n}");
    let product = i64::try_from(n % 5).expect("small") + 1;
    let client = common::client();
    app.register_as(&client, &name).await;
    let res = app.post_as(&client, "/logout").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{name}: logout");
    let res = app.log_in_as(&client, &name, common::PASSWORD).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{name}: login");
    let res = app.add_to_cart_as(&client, product, 1).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{name}: add");
    for path in ["/cart", "/account"] {
        let res = app.get_as(&client, path).await;
        assert_eq!(res.status(), StatusCode::OK, "{name}: {path}");
    }
    Shopper {
        client,
        name,
        product,
    }
}

/// `count` shoppers, a few at a time (password hashing is the slow part).
async fn shoppers(app: &TestApp, range: std::ops::Range<usize>) -> Vec<Shopper> {
    let mut all = Vec::new();
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(6) {
        all.extend(join_all(chunk.iter().map(|&n| shop(app, n))).await);
    }
    all
}

/// What `/session.json` shows a shopper: the user and the cart.
async fn seen(app: &TestApp, shopper: &Shopper) -> (Option<String>, Vec<(i64, u64)>) {
    let json = app.session_json_of(&shopper.client).await;
    let user = json["user"].as_str().map(str::to_owned);
    (user, app.cart_of(&shopper.client).await)
}

/// Session keys of this app under its prefix on the node on `port`.
async fn sessions_on(app: &TestApp, port: u16) -> usize {
    let pattern = format!("{}session:*", app.settings.redis_key_prefix);
    services::keys_on(&node_url(port), &pattern).await.len()
}

async fn thirty_shoppers_spread_over_every_master_and_survive_a_restart(variant: Variant) {
    let app = common::spawn_app_with(variant, |s| s.login_rate_limit_per_minute = 0).await;
    let shoppers = shoppers(&app, 0..30).await;

    let cluster = services::shared_cluster().await;
    for port in cluster.master_ports() {
        assert!(
            sessions_on(&app, port).await > 0,
            "the master on {port} holds sessions: no hot shard"
        );
    }

    let app = app.restart().await;
    for shopper in &shoppers {
        assert_eq!(
            seen(&app, shopper).await,
            (Some(shopper.name.clone()), vec![(shopper.product, 1)]),
            "{} after a restart of statecart",
            shopper.name
        );
    }
}

for_backends!(thirty_shoppers_spread_over_every_master_and_survive_a_restart => redis_cluster);

/// An app on `cluster`, with a key prefix of its own.
async fn app_on(cluster: &RedisCluster) -> TestApp {
    let (mut settings, data) = common::prepare(Variant::Sqlite).await;
    settings.session_backend = SessionBackend::Redis;
    settings.redis_url = cluster.url();
    settings.redis_cluster = true;
    settings.redis_key_prefix = services::cluster_prefix(&settings.redis_url);
    settings.login_rate_limit_per_minute = 0;
    common::start(settings, data).await
}

/// A master dies (SIGKILL). Until its replica takes over, requests of sessions on its slots
/// (and, while the cluster reports itself down, others) answer 503 with Retry-After, never
/// another 5xx and never as logged out; afterwards every shopper is back with the cart, and
/// can go on shopping.
#[tokio::test]
async fn a_killed_master_answers_503_until_its_replica_takes_over_then_every_cart_is_back() {
    if !services::cluster_available() {
        return;
    }
    let mut cluster = RedisCluster::start(ClusterShape {
        masters: 3,
        replicas_per_master: 1,
        node_timeout: Duration::from_secs(2),
    })
    .await
    .expect("a local Redis Cluster");
    let app = app_on(&cluster).await;
    let victim = cluster.master_ports()[0];

    // Enough shoppers that the victim holds some of them (each lands there with p = 1/3).
    let mut all = Vec::new();
    while sessions_on(&app, victim).await < 2 {
        assert!(all.len() < 60, "no sessions reached the master on {victim}");
        let next = all.len();
        all.extend(shoppers(&app, next..next + 6).await);
    }
    // Redis replicates asynchronously: what is not on the replica yet would be lost (the
    // README measures how much); this test is about what was replicated.
    cluster
        .wait_replicated(Duration::from_secs(10))
        .await
        .expect("replicas in sync");

    cluster.kill(victim).expect("kill the master");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut refused = 0;
    loop {
        let mut back = 0;
        for shopper in &all {
            let res = app.get_as(&shopper.client, "/session.json").await;
            match res.status() {
                StatusCode::OK => {
                    let json: serde_json::Value = res.json().await.expect("json");
                    assert_eq!(
                        json["user"].as_str(),
                        Some(shopper.name.as_str()),
                        "{}: never logged out by the failover",
                        shopper.name
                    );
                    back += 1;
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(
                        res.headers().contains_key("retry-after"),
                        "{}",
                        shopper.name
                    );
                    common::assert_no_set_cookie(&res, &shopper.name);
                    refused += 1;
                }
                other => panic!("{}: {other} during the failover", shopper.name),
            }
        }
        if back == all.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused > 0,
        "the killed master's sessions were refused for a while"
    );
    let masters = cluster.masters_now().await.expect("masters");
    assert!(
        !masters.contains(&victim),
        "a replica took over: {masters:?}"
    );

    for shopper in &all {
        assert_eq!(
            app.cart_of(&shopper.client).await,
            [(shopper.product, 1)],
            "{}: the cart came back",
            shopper.name
        );
        let res = app
            .add_to_cart_as(&shopper.client, shopper.product, 1)
            .await;
        assert_eq!(
            res.status(),
            StatusCode::SEE_OTHER,
            "{}: adds again",
            shopper.name
        );
    }
}
