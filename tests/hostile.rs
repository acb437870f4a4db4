//! Hostile input, kept as a suite: what an attack campaign tried against the release binary,
//! family by family, on every backend. Every case asserts its expected status and that it was
//! no 5xx; after each family the process still answers, no handler panicked, and the refused
//! requests changed nothing (the victim's cart, orders, accounts, the catalog).

mod common;

use std::{
    sync::{
        Once,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{PASSWORD, TestApp, Variant, spawn_app_with};
use reqwest::{Method, StatusCode, header::HeaderValue};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Panics anywhere in this test binary (a handler's panic would land here too).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Test threads are named `<test>::<variant>`; a failing assertion there is that
            // test's own failure. Any other thread is the server's.
            let on_test_thread = std::thread::current()
                .name()
                .is_some_and(|name| name.contains("::"));
            if !on_test_thread {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// A shop with a victim: `vic` is logged in on `app.client` with two units of product 1.
struct Shop {
    app: TestApp,
}

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct World {
    cart: Vec<(i64, u64)>,
    orders: i64,
    users: i64,
    catalog: Value,
}

/// What [`raw_status`] reports when the server closed the connection without answering:
/// right for a request whose framing is broken, since nothing after it can be trusted.
const CLOSED: u16 = 0;

/// How long a raw client waits for an answer: far above any expected one.
const RAW_TIMEOUT: Duration = Duration::from_secs(15);

async fn shop(variant: Variant) -> Shop {
    shop_with(variant, |_| {}).await
}

async fn shop_with(variant: Variant, change: impl FnOnce(&mut statecart::Settings)) -> Shop {
    count_panics();
    let app = spawn_app_with(variant, |s| {
        // The families below send many login forms from one address; the burst family
        // checks the per-address limit on its own shop.
        s.login_rate_limit_per_minute = 0;
        s.body_read_timeout = Duration::from_secs(1);
        change(s);
    })
    .await;
    app.register("vic").await;
    assert_eq!(app.add_to_cart(1, 2).await.status(), StatusCode::SEE_OTHER);
    Shop { app }
}

impl Shop {
    async fn world(&self) -> World {
        let db = self.app.db().await;
        let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
            .fetch_one(&db.pool)
            .await
            .expect("count orders");
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&db.pool)
            .await
            .expect("count users");
        db.close().await;
        World {
            cart: self.app.cart_of(&self.app.client).await,
            orders,
            users,
            catalog: self
                .app
                .get("/products.json")
                .await
                .json()
                .await
                .expect("json"),
        }
    }

    /// The victim's session cookie, as a raw `Cookie` header value.
    fn victim_cookie(&self) -> String {
        format!("statecart={}", self.app.cookie().expect("victim cookie"))
    }

    /// Runs `cases`, then checks that the process answers, nothing panicked and `before` holds.
    async fn run(&self, family: &str, cases: Vec<Case>) {
        let before = self.world().await;
        let mut failures = Vec::new();
        for case in &cases {
            match case.send(self).await {
                Ok(status) if status >= 500 => {
                    failures.push(format!("{}: {status}, a server error", case.name));
                }
                Ok(status) if !case.expect.contains(&status) => failures.push(format!(
                    "{}: {status}, expected one of {:?}",
                    case.name, case.expect
                )),
                Ok(_) => {}
                Err(err) => failures.push(format!("{}: no answer ({err})", case.name)),
            }
        }
        assert!(
            failures.is_empty(),
            "{family}: {} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        self.assert_unharmed(family, &before).await;
    }

    async fn assert_unharmed(&self, family: &str, before: &World) {
        assert_eq!(
            self.app.get("/healthz").await.status(),
            StatusCode::OK,
            "{family}: the process answers"
        );
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "{family}: a panic");
        assert_eq!(&self.world().await, before, "{family}: changed nothing");
    }
}

/// Who sends a case.
#[derive(Clone)]
enum Who {
    /// The logged-in victim's client (its cookie jar).
    Victim,
    /// A client with no cookie.
    Anonymous,
    /// No jar; exactly this `Cookie` header.
    Cookie(HeaderValue),
}

/// One hostile request over reqwest, or raw bytes over TCP.
struct Case {
    name: String,
    method: Method,
    path: String,
    who: Who,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Option<(&'static str, Vec<u8>)>,
    raw: Option<Vec<u8>>,
    expect: Vec<u16>,
}

fn case(name: &str, method: Method, path: &str, expect: &[u16]) -> Case {
    Case {
        name: name.to_owned(),
        method,
        path: path.to_owned(),
        who: Who::Victim,
        headers: Vec::new(),
        body: None,
        raw: None,
        expect: expect.to_vec(),
    }
}

fn get(name: &str, path: &str, expect: &[u16]) -> Case {
    case(name, Method::GET, path, expect)
}

/// A POST of an urlencoded form body written out by hand (duplicates, bad escapes and all).
fn post(name: &str, path: &str, form: &str, expect: &[u16]) -> Case {
    case(name, Method::POST, path, expect).body(
        "application/x-www-form-urlencoded",
        form.as_bytes().to_vec(),
    )
}

/// Raw bytes over TCP; `{cookie}` in them becomes the victim's cookie.
fn raw(name: &str, bytes: impl Into<Vec<u8>>, expect: &[u16]) -> Case {
    let mut c = case(name, Method::GET, "", expect);
    c.raw = Some(bytes.into());
    c
}

impl Case {
    fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.body = Some((content_type, body));
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers
            .push((name, HeaderValue::from_str(value).expect("header value")));
        self
    }

    fn anonymous(mut self) -> Self {
        self.who = Who::Anonymous;
        self
    }

    fn cookie(mut self, value: HeaderValue) -> Self {
        self.who = Who::Cookie(value);
        self
    }

    async fn send(&self, shop: &Shop) -> Result<u16, String> {
        if let Some(bytes) = &self.raw {
            let text = String::from_utf8_lossy(bytes);
            let bytes = if text.contains("{cookie}") {
                text.replace("{cookie}", &shop.victim_cookie()).into_bytes()
            } else {
                bytes.clone()
            };
            return raw_status(shop.app.port, &bytes).await;
        }
        let client = match &self.who {
            Who::Victim => shop.app.client.clone(),
            Who::Anonymous | Who::Cookie(_) => common::client(),
        };
        let mut req = client.request(self.method.clone(), shop.app.url(&self.path));
        if let Who::Cookie(value) = &self.who {
            req = req.header("cookie", value.clone());
        }
        for (name, value) in &self.headers {
            req = req.header(*name, value.clone());
        }
        if let Some((content_type, body)) = &self.body {
            req = req.header("content-type", *content_type).body(body.clone());
        }
        req.send()
            .await
            .map(|res| res.status().as_u16())
            .map_err(|e| e.to_string())
    }
}

/// Sends `bytes` on a fresh connection and returns the status of the answer.
async fn raw_status(port: u16, bytes: &[u8]) -> Result<u16, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(bytes).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut buf = [0_u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 && answer.is_empty() {
                return Ok(CLOSED);
            }
            if n == 0 {
                return Err(format!(
                    "closed without a status line: {:?}",
                    String::from_utf8_lossy(&answer)
                ));
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&answer).into_owned();
        line.split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("no status in {line:?}"))
    };
    tokio::time::timeout(RAW_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer in time".to_owned())?
}

fn big(n: usize) -> String {
    "x".repeat(n)
}

// ---------------------------------------------------------------------------------------------
// Families
// ---------------------------------------------------------------------------------------------

/// Tampered, foreign-key, oversized and garbage cookies are no session, never an error.
async fn cookies_that_are_not_a_session_are_ignored(variant: Variant) {
    let shop = shop(variant).await;
    let victim = shop.app.cookie().expect("cookie");
    let mut flipped = victim.clone().into_bytes();
    let middle = flipped.len() / 2;
    flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let foreign = {
        let key = actix_web::cookie::Key::generate();
        let mut jar = actix_web::cookie::CookieJar::new();
        jar.private_mut(&key).add(actix_web::cookie::Cookie::new(
            "statecart",
            r#"{"user":"{\"id\":1,\"name\":\"vic\"}"}"#,
        ));
        jar.delta()
            .next()
            .expect("cookie")
            .encoded()
            .to_string()
            .trim_start_matches("statecart=")
            .to_owned()
    };
    let header = |v: &str| HeaderValue::from_str(v).expect("header");
    let values = [
        ("garbage", header("statecart=garbage")),
        ("empty value", header("statecart=")),
        (
            "4000-byte value",
            header(&format!("statecart={}", big(4000))),
        ),
        (
            "tampered (one byte flipped)",
            header(&format!("statecart={flipped}")),
        ),
        (
            "truncated",
            header(&format!("statecart={}", &victim[..victim.len() / 2])),
        ),
        ("foreign key", header(&format!("statecart={foreign}"))),
        (
            "duplicated name",
            header("statecart=garbage; statecart=other"),
        ),
        (
            "non-UTF-8 bytes",
            HeaderValue::from_bytes(b"statecart=\xff\xfe\xfd").expect("obs-text"),
        ),
        ("percent garbage", header("statecart=%00%ff%zz")),
        (
            "the secure name on a plain-http server",
            header(&format!("__Host-statecart={victim}")),
        ),
        ("a JSON state in clear", header(r#"statecart={"user":"1"}"#)),
    ];
    let mut cases = Vec::new();
    for (name, value) in values {
        cases.push(get(&format!("GET /cart, {name}"), "/cart", &[303]).cookie(value.clone()));
        cases.push(
            post(
                &format!("POST /cart/clear, {name}"),
                "/cart/clear",
                "",
                &[303],
            )
            .cookie(value.clone()),
        );
        cases.push(post(&format!("POST /checkout, {name}"), "/checkout", "", &[303]).cookie(value));
    }
    shop.run("cookies", cases).await;
}

/// Login and registration refuse hostile names and passwords with the form's own answer.
async fn hostile_credentials_get_the_generic_answer(variant: Variant) {
    let shop = shop(variant).await;
    let pw = PASSWORD.replace(' ', "+");
    let cases = vec![
        post(
            "login, NUL in the username",
            "/login",
            &format!("username=vic%00&password={pw}"),
            &[422],
        )
        .anonymous(),
        post(
            "login, bidi override in the username",
            "/login",
            &format!("username=%E2%80%AEvic&password={pw}"),
            &[422],
        )
        .anonymous(),
        post(
            "login, 15 KB username",
            "/login",
            &format!("username={}&password=x", big(15_000)),
            &[422],
        )
        .anonymous(),
        post(
            "login, 5 KB password",
            "/login",
            &format!("username=vic&password={}", big(5_000)),
            &[422],
        )
        .anonymous(),
        post(
            "login, non-UTF-8 username",
            "/login",
            "username=%FF%FE&password=x",
            &[422],
        )
        .anonymous(),
        post("login, raw non-UTF-8 body", "/login", "", &[400, 422])
            .anonymous()
            .body(
                "application/x-www-form-urlencoded",
                b"username=\xff\xfe&password=\xc3".to_vec(),
            ),
        post("login, no fields", "/login", "", &[422]).anonymous(),
        post(
            "login, username twice",
            "/login",
            "username=vic&username=root&password=x",
            &[400],
        )
        .anonymous(),
        post("login, JSON body", "/login", "", &[400, 415])
            .anonymous()
            .body(
                "application/json",
                br#"{"username":"vic","password":"x"}"#.to_vec(),
            ),
        post(
            "login, 20 KB body",
            "/login",
            &format!("username=vic&password={}", big(20_000)),
            &[413],
        )
        .anonymous(),
        post(
            "login, SQL in the username",
            "/login",
            "username=vic'--&password=x",
            &[422],
        )
        .anonymous(),
        post(
            "login, the right password with a trailing NUL",
            "/login",
            &format!("username=vic&password={pw}%00"),
            &[422],
        )
        .anonymous(),
        post(
            "register, bidi override",
            "/register",
            &format!("username=vic%E2%80%AE&password={pw}"),
            &[422],
        )
        .anonymous(),
        post(
            "register, NUL",
            "/register",
            &format!("username=ad%00min&password={pw}"),
            &[422],
        )
        .anonymous(),
        post(
            "register, zero-width space",
            "/register",
            &format!("username=v%E2%80%8Bic&password={pw}"),
            &[422],
        )
        .anonymous(),
        post(
            "register, 2 KB password",
            "/register",
            &format!("username=newbie&password={}", big(2_000)),
            &[422],
        )
        .anonymous(),
        post(
            "register, 33-character name",
            "/register",
            &format!("username={}&password={pw}", big(33)),
            &[422],
        )
        .anonymous(),
        post(
            "register, the victim's name in other letter case",
            "/register",
            &format!("username=VIC&password={pw}"),
            &[422],
        )
        .anonymous(),
        post(
            "register, markup in the name",
            "/register",
            &format!("username=%3Cscript%3E&password={pw}"),
            &[422],
        )
        .anonymous(),
        post(
            "register, a percent-encoded path",
            "/%72egister",
            &format!("username=%00&password={pw}"),
            &[422],
        )
        .anonymous(),
        post(
            "register, password twice",
            "/register",
            &format!("username=newbie&password={pw}&password=x"),
            &[400],
        )
        .anonymous(),
        post(
            "login, next with a bidi override",
            "/login",
            "username=vic&password=x&next=/%E2%80%AEgpj.exe",
            &[422],
        )
        .anonymous(),
        post(
            "login, next of 4 KB",
            "/login",
            &format!("username=vic&password=x&next=/{}", big(4_000)),
            &[422],
        )
        .anonymous(),
        post(
            "login, next twice",
            "/login",
            "username=vic&password=x&next=/a&next=//evil.example",
            &[400],
        )
        .anonymous(),
        post(
            "register, next non-UTF-8",
            "/register",
            "username=vic&password=x&next=%FF%FE",
            &[422],
        )
        .anonymous(),
    ];
    shop.run("credentials", cases).await;
}

/// Unsafe requests from another site are refused before the session is read.
async fn cross_site_requests_are_refused(variant: Variant) {
    let shop = shop(variant).await;
    let cases = vec![
        post(
            "clear, Sec-Fetch-Site cross-site",
            "/cart/clear",
            "",
            &[403],
        )
        .header("sec-fetch-site", "cross-site"),
        post(
            "add, Sec-Fetch-Site same-site",
            "/cart/add",
            "product_id=2&quantity=1",
            &[403],
        )
        .header("sec-fetch-site", "same-site"),
        post(
            "update, foreign Origin",
            "/cart/update",
            "product_id=1&quantity=0",
            &[403],
        )
        .header("origin", "https://evil.example"),
        post("checkout, Origin null", "/checkout", "", &[403]).header("origin", "null"),
        post(
            "logout, Origin with our host as a subdomain",
            "/logout",
            "",
            &[403],
        )
        .header("origin", "http://127.0.0.1.evil.example"),
        post(
            "revoke others, foreign Origin",
            "/account/sessions/revoke-others",
            "",
            &[403],
        )
        .header("origin", "https://evil.example"),
        post(
            "admin, Sec-Fetch-Site cross-site",
            "/admin/products",
            "product_id=1&price_cents=1",
            &[403],
        )
        .header("sec-fetch-site", "cross-site"),
        post(
            "login, cross-site",
            "/login",
            "username=vic&password=x",
            &[403],
        )
        .anonymous()
        .header("sec-fetch-site", "cross-site"),
        post(
            "register, cross-site",
            "/register",
            "username=newbie&password=longenough",
            &[403],
        )
        .anonymous()
        .header("origin", "https://evil.example"),
        post("checkout, Origin on another port", "/checkout", "", &[403])
            .header("origin", "http://127.0.0.1:1"),
    ];
    shop.run("cross-site", cases).await;
}

/// Cart forms refuse every malformed, duplicated or wrongly-typed body; the cart stays.
async fn malformed_cart_forms_leave_the_cart_alone(variant: Variant) {
    let shop = shop(variant).await;
    let cases = vec![
        post("add, no product", "/cart/add", "quantity=1", &[400]),
        post(
            "add, SQL as product",
            "/cart/add",
            "product_id=1+OR+1%3D1&quantity=1",
            &[400],
        ),
        post(
            "add, 25-digit product",
            "/cart/add",
            "product_id=9999999999999999999999999&quantity=1",
            &[400],
        ),
        post(
            "add, negative product",
            "/cart/add",
            "product_id=-1&quantity=1",
            &[400],
        ),
        post(
            "add, unknown product",
            "/cart/add",
            "product_id=999999&quantity=1",
            &[404],
        ),
        post(
            "add, quantity 0",
            "/cart/add",
            "product_id=2&quantity=0",
            &[422],
        ),
        post(
            "add, quantity 100",
            "/cart/add",
            "product_id=2&quantity=100",
            &[422],
        ),
        post(
            "add, quantity -1",
            "/cart/add",
            "product_id=2&quantity=-1",
            &[422],
        ),
        post(
            "add, quantity 1e3",
            "/cart/add",
            "product_id=2&quantity=1e3",
            &[400],
        ),
        post(
            "add, quantity with NUL",
            "/cart/add",
            "product_id=2&quantity=1%00",
            &[400],
        ),
        post(
            "add, quantity with a bidi override",
            "/cart/add",
            "product_id=2&quantity=%E2%80%AE1",
            &[400],
        ),
        post(
            "add, quantity twice",
            "/cart/add",
            "product_id=2&quantity=1&quantity=2",
            &[400],
        ),
        post(
            "add, product twice",
            "/cart/add",
            "product_id=2&product_id=3",
            &[400],
        ),
        post(
            "add, non-UTF-8 product",
            "/cart/add",
            "product_id=%FF&quantity=1",
            &[400],
        ),
        post(
            "add, 20 KB body",
            "/cart/add",
            &format!("product_id=2&quantity=1&pad={}", big(20_000)),
            &[413],
        ),
        post("add, JSON body", "/cart/add", "", &[400, 415]).body(
            "application/json",
            br#"{"product_id":2,"quantity":1}"#.to_vec(),
        ),
        post("add, text/plain body", "/cart/add", "", &[400, 415])
            .body("text/plain", b"product_id=2&quantity=1".to_vec()),
        post("add, multipart body", "/cart/add", "", &[400, 415]).body(
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"product_id\"\r\n\r\n2\r\n--x--\r\n"
                .to_vec(),
        ),
        post(
            "add, over the stock",
            "/cart/add",
            "product_id=1&quantity=99",
            &[409, 422],
        ),
        post(
            "update, not in the cart",
            "/cart/update",
            "product_id=2&quantity=1",
            &[422],
        ),
        post(
            "update, no quantity",
            "/cart/update",
            "product_id=1",
            &[400],
        ),
        post(
            "update, quantity 100",
            "/cart/update",
            "product_id=1&quantity=100",
            &[422],
        ),
        post(
            "update, quantity 4294967296",
            "/cart/update",
            "product_id=1&quantity=4294967296",
            &[422],
        ),
        post(
            "add, anonymous",
            "/cart/add",
            "product_id=2&quantity=1",
            &[303],
        )
        .anonymous(),
    ];
    shop.run("cart forms", cases).await;
}

/// A checkout whose body cannot be read as one form orders nothing.
async fn unreadable_checkouts_order_nothing(variant: Variant) {
    let shop = shop(variant).await;
    let cases = vec![
        post(
            "20 KB form",
            "/checkout",
            &format!("rev=2&pad={}", big(20_000)),
            &[413],
        ),
        post("JSON body", "/checkout", "", &[415])
            .body("application/json", br#"{"rev":2}"#.to_vec()),
        post("text/plain body", "/checkout", "", &[415]).body("text/plain", b"rev=2".to_vec()),
        post("rev twice", "/checkout", "rev=1&rev=2", &[400]),
        post("rev not a number", "/checkout", "rev=abc", &[400]),
        post("rev negative", "/checkout", "rev=-1", &[400]),
        post(
            "rev with a bidi override",
            "/checkout",
            "rev=%E2%80%AE2",
            &[400],
        ),
        post("rev non-UTF-8", "/checkout", "rev=%FF", &[400]),
        post("rev stale", "/checkout", "rev=0", &[409]),
        post("rev from the future", "/checkout", "rev=99999", &[409]),
        post("anonymous", "/checkout", "", &[303]).anonymous(),
        raw(
            "a body without a content type",
            "POST /checkout HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nrev=2",
            &[415],
        ),
    ];
    shop.run("checkout bodies", cases).await;
}

/// Admin pages for accounts without the role, and for nobody at all.
async fn admin_is_refused_to_non_admins(variant: Variant) {
    let shop = shop_with(variant, |s| s.admin_users = vec!["vic-not".to_owned()]).await;
    let cases = vec![
        get("GET, a customer", "/admin/products", &[403]),
        post(
            "POST price, a customer",
            "/admin/products",
            "product_id=1&price_cents=1",
            &[403],
        ),
        post(
            "POST stock, a customer",
            "/admin/products",
            "product_id=1&stock=0",
            &[403],
        ),
        get("GET, anonymous", "/admin/products", &[303]).anonymous(),
        post(
            "POST, anonymous",
            "/admin/products",
            "product_id=1&price_cents=1",
            &[303],
        )
        .anonymous(),
        get("GET, percent-encoded path", "/%61dmin/products", &[403]),
    ];
    shop.run("admin", cases).await;
}

/// An admin's own forms refuse hostile values and change nothing in the catalog.
async fn hostile_admin_values_change_no_price_or_stock(variant: Variant) {
    let shop = shop(variant).await;
    let db = shop.app.db().await;
    let name = statecart::domain::accounts::Username::parse("vic").expect("name");
    statecart::domain::accounts::set_admin(&db, &name, true)
        .await
        .expect("grant");
    db.close().await;
    let cases = vec![
        post(
            "price with NUL",
            "/admin/products",
            "product_id=1&price_cents=1%00",
            &[422],
        ),
        post(
            "price with a bidi override",
            "/admin/products",
            "product_id=1&price_cents=%E2%80%AE1",
            &[422],
        ),
        post(
            "price non-UTF-8",
            "/admin/products",
            "product_id=1&price_cents=%FF",
            &[422],
        ),
        post(
            "price 25 digits",
            "/admin/products",
            "product_id=1&price_cents=9999999999999999999999999",
            &[422],
        ),
        post(
            "price over the maximum",
            "/admin/products",
            "product_id=1&price_cents=100000001",
            &[422],
        ),
        post(
            "price negative",
            "/admin/products",
            "product_id=1&price_cents=-1",
            &[422],
        ),
        post(
            "price as a float",
            "/admin/products",
            "product_id=1&price_cents=1.5",
            &[422],
        ),
        post(
            "stock over the maximum",
            "/admin/products",
            "product_id=1&stock=1000001",
            &[422],
        ),
        post(
            "stock twice",
            "/admin/products",
            "product_id=1&stock=1&stock=2",
            &[400],
        ),
        post(
            "product with NUL",
            "/admin/products",
            "product_id=1%00&stock=1",
            &[400],
        ),
        post(
            "product overlong",
            "/admin/products",
            &format!("product_id={}&stock=1", "9".repeat(5000)),
            &[400],
        ),
        post("no product", "/admin/products", "stock=1", &[400]),
        post(
            "20 KB body",
            "/admin/products",
            &format!("product_id=1&stock=1&pad={}", big(20_000)),
            &[413],
        ),
        post("JSON body", "/admin/products", "", &[400, 415]).body(
            "application/json",
            br#"{"product_id":1,"stock":0}"#.to_vec(),
        ),
        post(
            "cross-site, even for an admin",
            "/admin/products",
            "product_id=1&stock=0",
            &[403],
        )
        .header("sec-fetch-site", "cross-site"),
    ];
    shop.run("admin values", cases).await;
}

/// The live stream and the polling endpoint refuse what they cannot serve.
async fn live_endpoints_refuse_abuse(variant: Variant) {
    let shop = shop(variant).await;
    let cases = vec![
        get("stream, anonymous", "/cart/live", &[303]).anonymous(),
        get("changes, anonymous", "/cart/changes?since=0", &[303]).anonymous(),
        get(
            "changes, since not a number",
            "/cart/changes?since=abc",
            &[400],
        ),
        get("changes, since negative", "/cart/changes?since=-1", &[400]),
        get(
            "changes, since 25 digits",
            "/cart/changes?since=9999999999999999999999999",
            &[400],
        ),
        get(
            "changes, since twice",
            "/cart/changes?since=1&since=2",
            &[400],
        ),
        case("stream, POST", Method::POST, "/cart/live", &[404, 405]),
        case("stream, DELETE", Method::DELETE, "/cart/live", &[404, 405]),
        get("stream, garbage cookie", "/cart/live", &[303])
            .cookie(HeaderValue::from_static("statecart=garbage")),
    ];
    shop.run("live", cases).await;
    // Many streams of one user: each is a lease, the oldest end first; the process holds.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let res = shop.app.get("/cart/live").await;
        assert_eq!(res.status(), StatusCode::OK);
        streams.push(res);
    }
    drop(streams);
    assert_eq!(shop.app.get("/healthz").await.status(), StatusCode::OK);
}

/// Percent-encoding, dot segments, double slashes and bad bytes in paths find nothing new.
async fn path_tricks_find_nothing(variant: Variant) {
    let shop = shop(variant).await;
    let get_raw = |name: &str, path: &[u8], expect: &[u16]| {
        let mut bytes = b"GET ".to_vec();
        bytes.extend_from_slice(path);
        bytes.extend_from_slice(
            b" HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n",
        );
        raw(name, bytes, expect)
    };
    let cases = vec![
        get_raw("dot segments to a file", b"/../../etc/passwd", &[400, 404]),
        get_raw("dot segments in static", b"/static/../Cargo.toml", &[404]),
        get_raw(
            "encoded slash in static",
            b"/static/..%2F..%2FCargo.toml",
            &[404],
        ),
        get_raw("encoded dots in static", b"/static/%2e%2e/app.css", &[404]),
        get_raw("double slash", b"//cart", &[404]),
        get_raw("double slash inside", b"/cart//live", &[404]),
        get_raw("encoded slash in a product", b"/products/..%2F1", &[404]),
        get_raw("NUL in a product", b"/products/1%00", &[404]),
        get_raw("non-UTF-8 percent path", b"/%FF%FE", &[404]),
        get_raw("raw non-UTF-8 bytes in the path", b"/\xff\xfe", &[400, 404]),
        get_raw(
            "25-digit product",
            b"/products/9999999999999999999999999",
            &[404],
        ),
        get_raw("negative product", b"/products/-1", &[404]),
        get_raw("someone's order", b"/orders/1", &[404]),
        get_raw("an order that is no number", b"/orders/abc", &[404]),
        get_raw("trailing slash", b"/session.json/", &[404]),
        get_raw("backslash", b"/cart\\..\\admin", &[400, 404]),
        get_raw(
            "8 KB path",
            format!("/{}", big(8_000)).as_bytes(),
            &[400, 404, 414, 431],
        ),
        get("GET /log%69n while logged in", "/log%69n", &[303]),
        post(
            "login POST, percent-encoded path",
            "/%6Cogin",
            "username=vic&password=wrong",
            &[422],
        )
        .anonymous(),
        get(
            "next to another site",
            "/login?next=//evil.example/",
            &[303],
        ),
        get(
            "next with CR LF",
            "/login?next=/%0d%0aSet-Cookie:%20x=1",
            &[303],
        ),
    ];
    shop.run("paths", cases).await;
    // The compare page is public: it must not show where this server keeps its files.
    let page = shop.app.get("/compare").await.text().await.expect("body");
    let data_dir = shop.app.settings.data_dir.display().to_string();
    assert!(!page.contains(&data_dir), "/compare shows {data_dir}");
}

/// The wrong method on every stateful route, and tunnelling headers, change nothing.
async fn the_wrong_method_changes_nothing(variant: Variant) {
    let shop = shop(variant).await;
    let cases = vec![
        get("GET /logout", "/logout", &[404, 405]),
        get("GET /checkout", "/checkout", &[404, 405]),
        get("GET /cart/clear", "/cart/clear", &[404, 405]),
        get(
            "GET /cart/add with a query",
            "/cart/add?product_id=2&quantity=1",
            &[404, 405],
        ),
        case("PUT /cart/add", Method::PUT, "/cart/add", &[404, 405]),
        case("DELETE /cart", Method::DELETE, "/cart", &[404, 405]),
        case("PATCH /checkout", Method::PATCH, "/checkout", &[404, 405]),
        case("POST /", Method::POST, "/", &[404, 405]),
        case("POST /products/1", Method::POST, "/products/1", &[404, 405]),
        case("OPTIONS /cart", Method::OPTIONS, "/cart", &[404, 405]),
        case("TRACE /", Method::TRACE, "/", &[404, 405]),
        case("HEAD /cart/live", Method::HEAD, "/cart/live", &[404, 405]),
        case(
            "an unknown method",
            Method::from_bytes(b"BREW").expect("method"),
            "/cart",
            &[404, 405],
        ),
        get(
            "GET /cart/clear with a method-override header",
            "/cart/clear",
            &[404, 405],
        )
        .header("x-http-method-override", "POST"),
    ];
    shop.run("methods", cases).await;
}

/// Malformed HTTP gets a 4xx from the protocol layer; the server goes on.
async fn broken_http_is_refused(variant: Variant) {
    let shop = shop(variant).await;
    let cases = vec![
        raw(
            "Content-Length with chunked",
            "POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        raw(
            "negative Content-Length",
            "POST /cart/clear HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: -1\r\n\r\n",
            &[400],
        ),
        raw(
            "two different Content-Lengths",
            "POST /checkout HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nrev=2",
            &[400],
        ),
        raw(
            "a header without a colon",
            "GET /cart HTTP/1.1\r\nHost: x\r\nnonsense\r\n\r\n",
            &[400],
        ),
        raw("garbage instead of a request", "HELLO\r\n\r\n", &[400]),
        raw(
            "64 KB of headers",
            format!(
                "GET /cart HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
                big(64 * 1024)
            ),
            &[303, 400, 431],
        ),
        raw(
            "HTTP/1.0 without Host",
            "GET /cart HTTP/1.0\r\n\r\n",
            &[303],
        ),
        raw(
            "an unknown HTTP version",
            "GET / HTTP/7.0\r\nHost: x\r\n\r\n",
            &[400, 505],
        ),
        raw(
            "absolute-form target to another host",
            "GET http://evil.example/cart HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            &[303, 400],
        ),
        raw(
            "a chunked checkout with a bad chunk size (the framing is lost: closed)",
            "POST /checkout HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nrev=2\r\n0\r\n\r\n",
            &[CLOSED, 400],
        ),
    ];
    shop.run("protocol", cases).await;
}

/// A body that trickles in gets 408 once `body_read_timeout_secs` has passed (1 s here).
async fn slow_bodies_time_out_with_408(variant: Variant) {
    let shop = shop(variant).await;
    let before = shop.world().await;
    let heads = [
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nusername=v".to_owned(),
        format!(
            "POST /checkout HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nrev=",
            shop.victim_cookie()
        ),
        format!(
            "POST /cart/add HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nc\r\nproduct_id=2\r\n",
            shop.victim_cookie()
        ),
    ];
    for head in heads {
        let status = raw_status(shop.app.port, head.as_bytes()).await;
        assert_eq!(
            status,
            Ok(408),
            "{}",
            head.lines().next().unwrap_or_default()
        );
    }
    shop.assert_unharmed("slow bodies", &before).await;
}

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

/// Every answer, error pages included, says what browsers must refuse.
async fn every_response_carries_the_security_headers(variant: Variant) {
    let shop = shop(variant).await;
    let anonymous = common::client();
    let responses = vec![
        ("home", shop.app.get("/").await),
        ("asset", shop.app.get("/static/app.css").await),
        ("cart", shop.app.get("/cart").await),
        ("404", shop.app.get("/nope").await),
        ("405", shop.app.get("/logout").await),
        (
            "403 from middleware",
            shop.app
                .client
                .post(shop.app.url("/cart/clear"))
                .header("sec-fetch-site", "cross-site")
                .send()
                .await
                .expect("POST"),
        ),
        (
            "login redirect",
            anonymous
                .get(shop.app.url("/cart"))
                .send()
                .await
                .expect("GET"),
        ),
    ];
    for (what, res) in responses {
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = header("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp:?}");
        assert!(csp.contains("script-src 'self'"), "{what}: {csp:?}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
        assert!(!header("referrer-policy").is_empty(), "{what}");
    }
}

/// `next` never puts raw UTF-8 or invisible characters into a `Location` header.
async fn redirect_targets_are_ascii_and_visible(variant: Variant) {
    let shop = shop(variant).await;
    for (next, location) in [
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/%E2%80%AEexe.txt", "/"),
        ("/a%E2%80%8Bb", "/"),
        ("/a%20b", "/a%20b"),
    ] {
        let res = shop.app.get(&format!("/login?next={next}")).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(
            res.headers()["location"].as_bytes(),
            location.as_bytes(),
            "{next}"
        );
    }
}

/// Off loopback the cookie is `Secure` and named with the `__Host-` prefix.
async fn a_secure_cookie_has_the_host_prefix(variant: Variant) {
    count_panics();
    let app = spawn_app_with(variant, |s| s.cookie_secure = true).await;
    let res = app
        .post_form("/register", &[("username", "sam"), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.contains("statecart="))
        .expect("a session cookie")
        .to_owned();
    assert!(cookie.starts_with("__Host-statecart="), "{cookie}");
    assert!(
        cookie.contains("Secure") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Domain"), "{cookie}");
}

for_each_backend!(
    cookies_that_are_not_a_session_are_ignored,
    hostile_credentials_get_the_generic_answer,
    cross_site_requests_are_refused,
    malformed_cart_forms_leave_the_cart_alone,
    unreadable_checkouts_order_nothing,
    admin_is_refused_to_non_admins,
    hostile_admin_values_change_no_price_or_stock,
    live_endpoints_refuse_abuse,
    path_tricks_find_nothing,
    the_wrong_method_changes_nothing,
    broken_http_is_refused,
    slow_bodies_time_out_with_408,
    bursts_meet_the_login_limit_on_every_spelling_of_the_path,
    parallel_logins_never_fail_with_a_server_error,
    guessing_throttles_the_guesser_not_the_owner,
    every_response_carries_the_security_headers,
    redirect_targets_are_ascii_and_visible,
    a_secure_cookie_has_the_host_prefix,
);
