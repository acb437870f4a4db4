//! The driver: a shop with a victim, hostile cases as data, and the checks every family ends
//! with (the process answers, nothing panicked, nothing changed).

use std::{
    sync::{
        Once,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use reqwest::{Method, StatusCode, header::HeaderValue};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::common::{self, TestApp, Variant, spawn_app_with};

/// Panics off the test threads anywhere in this test binary (a handler's panic lands here).
/// A family compares it with its own starting count, so a panic is charged to the families
/// running when it happened, never to every family after it.
pub(crate) static PANICS: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn count_panics() {
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
pub(crate) struct Shop {
    pub(crate) app: TestApp,
    /// [`PANICS`] when this shop opened.
    panics_at_open: usize,
}

/// Everything a refused request must leave as it was.
#[derive(Debug, PartialEq)]
pub(crate) struct World {
    cart: Vec<(i64, u64)>,
    orders: i64,
    users: i64,
    catalog: Value,
}

/// What [`raw_status`] reports when the server closed the connection without answering:
/// right for a request whose framing is broken, since nothing after it can be trusted.
pub(crate) const CLOSED: u16 = 0;

/// How long a raw client waits for an answer: far above any expected one.
pub(crate) const RAW_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) async fn shop(variant: Variant) -> Shop {
    shop_with(variant, |_| {}).await
}

pub(crate) async fn shop_with(
    variant: Variant,
    change: impl FnOnce(&mut statecart::Settings),
) -> Shop {
    count_panics();
    let panics_at_open = PANICS.load(Ordering::SeqCst);
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
    Shop {
        app,
        panics_at_open,
    }
}

impl Shop {
    pub(crate) async fn world(&self) -> World {
        World {
            cart: self.app.cart_of(&self.app.client).await,
            orders: self.app.count_rows("orders").await,
            users: self.app.count_rows("users").await,
            catalog: self.app.json("/products.json").await,
        }
    }

    /// The victim's session cookie, as a raw `Cookie` header value.
    pub(crate) fn victim_cookie(&self) -> String {
        format!("statecart={}", self.app.cookie().expect("victim cookie"))
    }

    /// Runs `cases`, then checks that the process answers, nothing panicked and `before` holds.
    pub(crate) async fn run(&self, family: &str, cases: Vec<Case>) {
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

    pub(crate) async fn assert_unharmed(&self, family: &str, before: &World) {
        assert_eq!(
            self.app.get("/healthz").await.status(),
            StatusCode::OK,
            "{family}: the process answers"
        );
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            self.panics_at_open,
            "{family}: a panic off the test threads"
        );
        assert_eq!(&self.world().await, before, "{family}: changed nothing");
    }
}

/// Who sends a case.
#[derive(Clone)]
pub(crate) enum Who {
    /// The logged-in victim's client (its cookie jar).
    Victim,
    /// A client with no cookie.
    Anonymous,
    /// No jar; exactly this `Cookie` header.
    Cookie(HeaderValue),
}

/// One hostile request over reqwest, or raw bytes over TCP.
pub(crate) struct Case {
    name: String,
    method: Method,
    path: String,
    who: Who,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Option<(&'static str, Vec<u8>)>,
    raw: Option<Vec<u8>>,
    expect: Vec<u16>,
}

pub(crate) fn case(name: &str, method: Method, path: &str, expect: &[u16]) -> Case {
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

pub(crate) fn get(name: &str, path: &str, expect: &[u16]) -> Case {
    case(name, Method::GET, path, expect)
}

/// A POST of an urlencoded form body written out by hand (duplicates, bad escapes and all).
pub(crate) fn post(name: &str, path: &str, form: &str, expect: &[u16]) -> Case {
    case(name, Method::POST, path, expect).body(
        "application/x-www-form-urlencoded",
        form.as_bytes().to_vec(),
    )
}

/// Raw bytes over TCP; `{cookie}` in them becomes the victim's cookie.
pub(crate) fn raw(name: &str, bytes: impl Into<Vec<u8>>, expect: &[u16]) -> Case {
    let mut c = case(name, Method::GET, "", expect);
    c.raw = Some(bytes.into());
    c
}

impl Case {
    pub(crate) fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.body = Some((content_type, body));
        self
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers
            .push((name, HeaderValue::from_str(value).expect("header value")));
        self
    }

    pub(crate) fn anonymous(mut self) -> Self {
        self.who = Who::Anonymous;
        self
    }

    pub(crate) fn cookie(mut self, value: HeaderValue) -> Self {
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
pub(crate) async fn raw_status(port: u16, bytes: &[u8]) -> Result<u16, String> {
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

pub(crate) fn big(n: usize) -> String {
    "x".repeat(n)
}
