//! Test helpers: spawn the app in-process on port 0 with a fresh data dir, per session backend.
#![allow(dead_code)]

pub mod balancer;
pub mod process;
pub mod proxy;
pub mod services;

use std::{path::PathBuf, sync::Arc, time::Duration};

use reqwest::cookie::{CookieStore as _, Jar};
use services::{POSTGRES_ENV, REDIS_ENV, Service, service_url};
use statecart::{
    Application, Settings,
    config::{DatabaseUrl, SessionBackend},
};
use tempfile::TempDir;

/// One backend variant the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Session in an encrypted cookie; app data in SQLite.
    Cookie,
    /// Session in process memory; app data in SQLite.
    Memory,
    /// Session in the SQLite app database.
    Sqlite,
    /// Session and app data in PostgreSQL (`STATECART_TEST_POSTGRES_URL`).
    Postgres,
    /// Session in Redis (`STATECART_TEST_REDIS_URL`); app data in SQLite.
    Redis,
    /// Session in a private local Redis Cluster (3 masters, a replica each) from
    /// `redis-server`, with `redis_cluster`; app data in SQLite.
    RedisCluster,
}

impl Variant {
    /// Every backend this run can test (variants whose service is not configured are skipped,
    /// or fail the run when CI=true). The Redis Cluster is the redis backend again, on other
    /// infrastructure: the suites that name it run it (`for_each_backend_and_cluster!`).
    pub fn available() -> Vec<Variant> {
        [
            Self::Cookie,
            Self::Memory,
            Self::Sqlite,
            Self::Postgres,
            Self::Redis,
        ]
        .into_iter()
        .filter(|v| v.is_available())
        .collect()
    }

    /// Whether this variant can run here (its service, if any, is configured).
    pub fn is_available(self) -> bool {
        match self {
            Self::Postgres => service_url(POSTGRES_ENV).is_some(),
            Self::Redis => service_url(REDIS_ENV).is_some(),
            Self::RedisCluster => services::cluster_available(),
            _ => true,
        }
    }

    pub fn backend(self) -> SessionBackend {
        match self {
            Self::Cookie => SessionBackend::Cookie,
            Self::Memory => SessionBackend::Memory,
            Self::Sqlite | Self::Postgres => SessionBackend::Database,
            Self::Redis | Self::RedisCluster => SessionBackend::Redis,
        }
    }

    /// Whether the server keeps the session (as the backend promises).
    pub fn server_side(self) -> bool {
        self.backend().promises().state_on_server
    }
}

/// A running app plus a cookie-keeping client that does not follow redirects.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// The `/metrics` listener's port, when `metrics_listen` gave it one of its own.
    pub metrics_port: Option<u16>,
    pub client: reqwest::Client,
    pub jar: Arc<Jar>,
    pub settings: Settings,
    handle: statecart::startup::Stopper,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    // Dropped last: the data dir and services outlive the server.
    pub data_dir: DataDir,
}

/// What an app's data lives in: a temporary folder, plus the test's own PostgreSQL database
/// or Redis prefix. Kept across a restart, removed when the test ends.
pub struct DataDir {
    dir: Option<TempDir>,
    path: PathBuf,
    service: Option<Service>,
}

impl DataDir {
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The same data for a second instance; the first one keeps ownership (and cleans up).
    pub fn shared(&self) -> DataDir {
        DataDir {
            dir: None,
            path: self.path.clone(),
            service: None,
        }
    }
}

/// Settings for a test app of `variant` in `data_dir`, on port 0.
pub fn test_settings(variant: Variant, data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::defaults_in(data_dir);
    settings.listen = "127.0.0.1:0".parse().expect("address");
    settings.session_backend = variant.backend();
    settings.instance = "test-instance".to_owned();
    // Every test client comes from 127.0.0.1: the guest limit has tests of its own.
    settings.guest_sessions_per_minute = 0;
    settings
}

/// A fresh data dir (and service resource) for `variant`, and settings that use them.
pub async fn prepare(variant: Variant) -> (Settings, DataDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(variant, dir.path());
    let service = match variant {
        Variant::Postgres => {
            let admin = service_url(POSTGRES_ENV).expect("postgres variant needs its URL");
            let (url, service) = services::create_postgres_database(&admin).await;
            settings.database_url = DatabaseUrl::parse(&url).expect("a PostgreSQL URL");
            Some(service)
        }
        Variant::Redis => {
            let url = service_url(REDIS_ENV).expect("redis variant needs its URL");
            let (prefix, service) = services::redis_prefix(&url).await;
            settings.redis_url = url;
            settings.redis_key_prefix = prefix;
            Some(service)
        }
        Variant::RedisCluster => {
            let cluster = services::shared_cluster().await;
            settings.redis_url = cluster.url();
            settings.redis_cluster = true;
            settings.redis_key_prefix = services::cluster_prefix(&settings.redis_url);
            // The keys go with the cluster, which lives as long as this test binary.
            None
        }
        _ => None,
    };
    let data_dir = DataDir {
        path: dir.path().to_owned(),
        dir: Some(dir),
        service,
    };
    (settings, data_dir)
}

/// Spawns an app of `variant` with default test settings.
pub async fn spawn_app(variant: Variant) -> TestApp {
    spawn_app_with(variant, |_| {}).await
}

/// Spawns an app of `variant`, letting the test change settings first.
pub async fn spawn_app_with(variant: Variant, change: impl FnOnce(&mut Settings)) -> TestApp {
    let (mut settings, data_dir) = prepare(variant).await;
    change(&mut settings);
    start(settings, data_dir).await
}

/// Starts an app on exactly these settings.
pub async fn start(settings: Settings, data_dir: DataDir) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    let port = app.port();
    let metrics_port = app.metrics_port();
    let handle = app.handle();
    let task = tokio::spawn(app.run_until_stopped());
    let (client, jar) = client_and_jar();
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        metrics_port,
        client,
        jar,
        settings,
        handle,
        task: Some(task),
        data_dir,
    }
}

/// A client that keeps cookies and shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    client_and_jar().0
}

/// A cookie-keeping client and its cookie jar, to read or replay the session cookie.
pub fn client_and_jar() -> (reqwest::Client, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let client = client_builder()
        .cookie_provider(Arc::clone(&jar))
        .build()
        .expect("client");
    (client, jar)
}

/// What every test client shares: redirects are answers to look at, and a hung server fails
/// the test instead of hanging it.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.post_form_as(&self.client, path, form).await
    }

    /// The session cookie this app's client holds now, if any.
    pub fn cookie(&self) -> Option<String> {
        cookie_in(&self.jar, &self.address)
    }

    /// Begins the drain a SIGTERM begins (the app goes on serving until stopped).
    pub fn begin_drain(&self) -> bool {
        self.handle.begin_drain()
    }

    /// Stops the server gracefully and waits for it, keeping the data dir.
    pub async fn stop(mut self) -> (Settings, DataDir) {
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let data_dir = std::mem::replace(
            &mut self.data_dir,
            DataDir {
                dir: None,
                path: PathBuf::new(),
                service: None,
            },
        );
        (self.settings.clone(), data_dir)
    }

    /// Stops this app and starts a new one on the same settings and data dir.
    pub async fn restart(self) -> TestApp {
        let (settings, data_dir) = self.stop().await;
        start(settings, data_dir).await
    }
}

/// Asserts that a response carries no `Set-Cookie`.
pub fn assert_no_set_cookie(res: &reqwest::Response, what: &str) {
    let cookies: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
    assert!(cookies.is_empty(), "{what} set a cookie: {cookies:?}");
}

/// Runs each named `async fn(Variant)` once per backend variant, as tests named
/// `<fn>::cookie`, `<fn>::memory`, `<fn>::sqlite`, `<fn>::postgres` and `<fn>::redis`. The last
/// two run when their service is configured (and must be, with CI=true).
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {$(
        $crate::for_backends!($name => cookie, memory, sqlite, postgres, redis);
    )*};
}

/// Runs each named `async fn(Variant)` on every backend as [`for_each_backend!`] does, and on
/// a Redis Cluster as `<fn>::redis_cluster`: the redis store family on one node and on a
/// cluster.
#[macro_export]
macro_rules! for_each_backend_and_cluster {
    ($($name:ident),* $(,)?) => {$(
        $crate::for_backends!($name => cookie, memory, sqlite, postgres, redis, redis_cluster);
    )*};
}

/// Runs an `async fn(Variant)` for the named variants only, for a behaviour that exists on
/// some backends alone (so no variant passes without asserting anything).
#[macro_export]
macro_rules! for_backends {
    ($name:ident => $($variant:ident),+ $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::common::Variant;
            $( $crate::backend_test!($name, $variant); )+
        }
    };
}

/// One generated test: `<variant>()` calling `super::<name>(Variant::<Variant>)` when that
/// variant can run here.
#[macro_export]
macro_rules! backend_test {
    ($name:ident, cookie) => {
        $crate::backend_test!($name, cookie, Cookie);
    };
    ($name:ident, memory) => {
        $crate::backend_test!($name, memory, Memory);
    };
    ($name:ident, sqlite) => {
        $crate::backend_test!($name, sqlite, Sqlite);
    };
    ($name:ident, postgres) => {
        $crate::backend_test!($name, postgres, Postgres);
    };
    ($name:ident, redis) => {
        $crate::backend_test!($name, redis, Redis);
    };
    ($name:ident, redis_cluster) => {
        $crate::backend_test!($name, redis_cluster, RedisCluster);
    };
    ($name:ident, $test:ident, $variant:ident) => {
        #[tokio::test]
        async fn $test() {
            if Variant::$variant.is_available() {
                super::$name(Variant::$variant).await
            }
        }
    };
}

/// Text as askama's HTML escaping writes it, to look for it in a page.
pub fn escaped(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// The password every test account uses.
pub const PASSWORD: &str = "correct horse battery";

impl TestApp {
    /// Registers `username` on this app's client (which is then logged in) and checks the 303.
    pub async fn register(&self, username: &str) {
        self.register_as(&self.client, username).await;
    }

    /// A fresh client (a second browser) logged in as `username`.
    pub async fn login_new_client(&self, username: &str) -> reqwest::Client {
        let client = client();
        let res = self.log_in_as(&client, username, PASSWORD).await;
        assert_eq!(
            res.status(),
            reqwest::StatusCode::SEE_OTHER,
            "login {username}"
        );
        client
    }

    /// `/session.json` as this app's client sees it.
    pub async fn session_json(&self) -> serde_json::Value {
        self.session_json_of(&self.client).await
    }

    /// `/session.json` as `client` sees it.
    pub async fn session_json_of(&self, client: &reqwest::Client) -> serde_json::Value {
        get_json(client, &self.url("/session.json")).await
    }

    /// Whether `client` is logged in, judged by /account (200) versus a redirect to login.
    pub async fn is_logged_in(&self, client: &reqwest::Client) -> bool {
        let res = client
            .get(self.url("/account"))
            .send()
            .await
            .expect("GET /account");
        match res.status() {
            reqwest::StatusCode::OK => true,
            reqwest::StatusCode::SEE_OTHER => {
                let location = res.headers()["location"].to_str().expect("ascii");
                assert!(location.starts_with("/login"), "redirected to {location}");
                false
            }
            other => panic!("/account answered {other}"),
        }
    }
}

/// The session cookie a jar holds for `address`, if any.
pub fn cookie_in(jar: &Jar, address: &str) -> Option<String> {
    let url = address.parse().expect("url");
    let header = jar.cookies(&url)?;
    header
        .to_str()
        .ok()?
        .split("; ")
        .find_map(|c| c.strip_prefix("statecart="))
        .map(str::to_owned)
}

/// The value of the session cookie a response sets, if any.
pub fn session_cookie(res: &reqwest::Response) -> Option<String> {
    let header = set_cookie_header(res, "statecart")?;
    let pair = header.split(';').next().unwrap_or_default();
    Some(pair.trim_start_matches("statecart=").to_owned())
}

/// A client with no cookie store that sends exactly `cookie` as the session cookie.
pub fn client_with_cookie(value: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "cookie",
        reqwest::header::HeaderValue::from_str(&format!("statecart={value}")).expect("header"),
    );
    client_builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

impl TestApp {
    /// Adds to this app's client's cart.
    pub async fn add_to_cart(&self, product_id: i64, quantity: u32) -> reqwest::Response {
        self.add_to_cart_as(&self.client, product_id, quantity)
            .await
    }

    /// The cart as `/session.json` reports it: `[(product_id, quantity)]`.
    pub async fn cart_of(&self, client: &reqwest::Client) -> Vec<(i64, u64)> {
        let json = self.session_json_of(client).await;
        json["cart"]
            .as_array()
            .expect("cart array")
            .iter()
            .map(|l| {
                (
                    l["product_id"].as_i64().expect("id"),
                    l["quantity"].as_u64().expect("quantity"),
                )
            })
            .collect()
    }

    /// The app's database, for arranging stock or counting rows.
    pub async fn db(&self) -> statecart::db::Db {
        statecart::db::Db::open(&self.settings.database_url)
            .await
            .expect("db")
    }

    /// Sets a product's stock in the database through the catalog clock, as another instance
    /// or `statecart admin` would: the app sees it at its next catalog poll.
    pub async fn set_stock_elsewhere(&self, product_id: i64, stock: i64) {
        let db = self.db().await;
        let id = statecart::domain::catalog::ProductId::parse(&product_id.to_string())
            .expect("product id");
        statecart::domain::catalog::set_stock(&db, id, stock)
            .await
            .expect("set stock");
        db.close().await;
    }

    /// Waits (up to 10 s) until the public JSON shows this stock: the catalog snapshot of the
    /// app caught up with a change made elsewhere.
    pub async fn wait_for_stock(&self, product_id: i64, stock: i64) {
        for _ in 0..100 {
            if self.stock_shown(product_id).await == Some(stock) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the app never showed stock {stock} for product {product_id}");
    }

    /// Current stock of a product, read through the public JSON.
    pub async fn stock_of(&self, product_id: i64) -> i64 {
        self.stock_shown(product_id).await.expect("product")
    }

    /// Stock of a product as the public JSON shows it, if it shows the product at all.
    async fn stock_shown(&self, product_id: i64) -> Option<i64> {
        let products: Vec<serde_json::Value> =
            self.get("/products.json").await.json().await.expect("json");
        products
            .iter()
            .find(|p| p["id"] == product_id)
            .and_then(|p| p["stock"].as_i64())
    }
}

impl TestApp {
    /// A fresh client (another browser) with a newly registered account, logged in.
    pub async fn client_registered(app: &TestApp, username: &str) -> reqwest::Client {
        let client = client();
        app.register_as(&client, username).await;
        client
    }
}

// Shared steps of the suites: one request, one registration, one checked answer, written once
// for every test that takes them.

/// The form a test account registers or logs in with.
pub fn credentials(username: &str) -> [(&'static str, &str); 2] {
    [("username", username), ("password", PASSWORD)]
}

/// POSTs `form` with `client` to a full `url` (of a [`TestApp`] or a [`process::Instance`]).
pub async fn post_form_to(
    client: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client.post(url).form(form).send().await.expect("POST")
}

/// Registers `username` with `client` at a full `/register` URL and checks the 303; `client`
/// is then logged in.
pub async fn register_at(client: &reqwest::Client, register_url: &str, username: &str) {
    let res = post_form_to(client, register_url, &credentials(username)).await;
    assert_eq!(
        res.status(),
        reqwest::StatusCode::SEE_OTHER,
        "register {username}"
    );
}

/// A full `url` as JSON, as `client` sees it, after checking the 200.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let res = client.get(url).send().await.expect("GET");
    assert_eq!(res.status(), reqwest::StatusCode::OK, "GET {url}");
    res.json().await.expect("json")
}

/// The body of a response.
pub async fn body(res: reqwest::Response) -> String {
    res.text().await.expect("body")
}

/// Checks that `res` is an HTML page with `status`, and returns its body.
pub async fn html_page(res: reqwest::Response, status: reqwest::StatusCode, what: &str) -> String {
    assert_eq!(res.status(), status, "{what}");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/html"),
        "{what}: a page, not {content_type:?}"
    );
    body(res).await
}

/// Where a redirect points (empty when it is none).
pub fn location(res: &reqwest::Response) -> &str {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The whole `Set-Cookie` header (value and attributes) by which `res` sets the cookie `name`.
pub fn set_cookie_header(res: &reqwest::Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&prefix))
        .map(str::to_owned)
}

impl TestApp {
    /// GET `path` with another client (another browser).
    pub async fn get_as(&self, client: &reqwest::Client, path: &str) -> reqwest::Response {
        client.get(self.url(path)).send().await.expect("GET")
    }

    /// POST to `path` with no body, with this app's client.
    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.post_as(&self.client, path).await
    }

    /// POST to `path` with no body, with another client.
    pub async fn post_as(&self, client: &reqwest::Client, path: &str) -> reqwest::Response {
        client.post(self.url(path)).send().await.expect("POST")
    }

    /// POST a form to `path` with another client.
    pub async fn post_form_as(
        &self,
        client: &reqwest::Client,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        post_form_to(client, &self.url(path), form).await
    }

    /// The body of `path` as this app's client sees it.
    pub async fn page(&self, path: &str) -> String {
        body(self.get(path).await).await
    }

    /// `path` as JSON, as this app's client sees it, after checking the 200.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        get_json(&self.client, &self.url(path)).await
    }

    /// Registers `username` with `client` (which is then logged in) and checks the 303.
    pub async fn register_as(&self, client: &reqwest::Client, username: &str) {
        register_at(client, &self.url("/register"), username).await;
    }

    /// A login attempt by `client`, as the login form sends it.
    pub async fn log_in_as(
        &self,
        client: &reqwest::Client,
        username: &str,
        password: &str,
    ) -> reqwest::Response {
        let form = [("username", username), ("password", password)];
        self.post_form_as(client, "/login", &form).await
    }

    /// Adds to `client`'s cart.
    pub async fn add_to_cart_as(
        &self,
        client: &reqwest::Client,
        product_id: i64,
        quantity: u32,
    ) -> reqwest::Response {
        let (product_id, quantity) = (product_id.to_string(), quantity.to_string());
        let form = [("product_id", product_id.as_str()), ("quantity", &quantity)];
        self.post_form_as(client, "/cart/add", &form).await
    }

    /// `client` buys `quantity` of a product: adds it to the cart and checks out, each step
    /// answered with a 303.
    pub async fn buy_as(&self, client: &reqwest::Client, product_id: i64, quantity: u32) {
        let res = self.add_to_cart_as(client, product_id, quantity).await;
        assert_eq!(
            res.status(),
            reqwest::StatusCode::SEE_OTHER,
            "add {quantity} of {product_id}"
        );
        let res = self.post_as(client, "/checkout").await;
        assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER, "checkout");
    }

    /// How many rows `table` of the app's database holds now.
    pub async fn count_rows(&self, table: &str) -> i64 {
        let db = self.db().await;
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        let n = sqlx::query_scalar(sql)
            .fetch_one(&db.pool)
            .await
            .unwrap_or_else(|err| panic!("count {table}: {err}"));
        db.close().await;
        n
    }

    /// Sessions the server keeps right now: rows, keys, or the memory backend's gauge (none
    /// on the cookie backend).
    pub async fn stored_sessions(&self) -> usize {
        match self.settings.session_backend {
            SessionBackend::Cookie => 0,
            SessionBackend::Memory => {
                usize::try_from(self.metric("statecart_memory_sessions").await).expect("count")
            }
            SessionBackend::Database => {
                usize::try_from(self.count_rows("sessions").await).expect("count")
            }
            SessionBackend::Redis => {
                // One node, or every master of a cluster (its seed nodes).
                let pattern = format!("{}session:*", self.settings.redis_key_prefix);
                let mut count = 0;
                for url in statecart::session::redis::seed_nodes(&self.settings.redis_url) {
                    count += services::keys_on(url, &pattern).await.len();
                }
                count
            }
        }
    }

    /// The value `/metrics` shows for the metric `name`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self.page("/metrics").await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("/metrics has no number for {name}:\n{text}"))
    }

    /// Restarts the app as [`TestApp::restart`] does, and keeps this client: the same browser,
    /// with its cookies, goes on against the new process.
    pub async fn restart_keeping_client(self) -> TestApp {
        let (client, jar) = (self.client.clone(), Arc::clone(&self.jar));
        let mut app = self.restart().await;
        app.client = client;
        app.jar = jar;
        app
    }
}
