//! `/metrics`: after a scripted visit the families a Prometheus user expects are there, with
//! bounded labels, in text that parses; its own listener with `metrics_listen`; request ids.

use std::collections::BTreeMap;

use reqwest::StatusCode;

use crate::common::{self, PASSWORD, TestApp, Variant, spawn_app, spawn_app_with};

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// Parses the Prometheus text format (0.0.4) strictly, panicking at the first line that is
/// not a `# HELP`/`# TYPE` comment or a well-formed sample, or at a sample whose family has
/// no `# TYPE`.
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), _) => assert!(is_name(name), "bad HELP: {line}"),
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(is_name(name), "bad TYPE: {line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "bad TYPE: {line}"
                    );
                    types.insert(name.to_owned(), kind.to_owned());
                }
                _ => panic!("unexpected comment: {line}"),
            }
            continue;
        }
        let sample = parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = sample.name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&sample.name);
        assert!(types.contains_key(family), "no TYPE for {line}");
        samples.push(sample);
    }
    samples
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !is_name(name) {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=')?;
            let key = &inner[..eq];
            if !is_name(key) {
                return None;
            }
            let mut chars = inner[eq + 1..].strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.to_owned(), value);
            inner = &inner[eq + 1..][1 + end + 1..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let mut parts = rest.strip_prefix(' ')?.split(' ');
    let value = match parts.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().ok()?,
    };
    if let Some(timestamp) = parts.next() {
        timestamp.parse::<i64>().ok()?;
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The value of the sample `name` with exactly these labels.
pub(crate) fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

/// `/metrics` of this app, parsed.
pub(crate) async fn scrape(app: &TestApp) -> Vec<Sample> {
    let res = common::client()
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), StatusCode::OK);
    parse(&res.text().await.expect("body"))
}

/// The number of requests counted with these labels (0 when the series does not exist).
fn requests(samples: &[Sample], route: &str, method: &str, status: &str) -> f64 {
    let labels = [("route", route), ("method", method), ("status", status)];
    value(samples, "statecart_http_requests_total", &labels).unwrap_or(0.0)
}

/// A visit: register, 20 cart writes, 20 cart views, a checkout (which moves the catalog
/// clock), log out, a wrong password, a login, an unknown product and a mistyped address.
async fn scripted_traffic(app: &TestApp) {
    app.register("ada").await;
    for i in 0..20 {
        let res = app.add_to_cart(1 + i % 4, 1).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "add {i}");
    }
    for _ in 0..20 {
        assert_eq!(app.get("/cart").await.status(), StatusCode::OK);
    }
    assert_eq!(app.post("/checkout").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.post("/logout").await.status(), StatusCode::SEE_OTHER);
    let wrong = app.log_in_as(&app.client, "ada", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let right = app.log_in_as(&app.client, "ada", PASSWORD).await;
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/products/999999").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/no-such-page").await.status(),
        StatusCode::NOT_FOUND
    );
}

/// After a scripted visit `/metrics` parses and shows requests by route pattern, method and
/// status with their latency histogram, the store's operations (where the server keeps
/// state), the compare-and-set counters, logins by outcome, the hashing queue, the catalog and
/// the series it had before.
async fn after_traffic_every_expected_family_is_there(variant: Variant) {
    let app = spawn_app(variant).await;
    scripted_traffic(&app).await;
    let samples = scrape(&app).await;

    let add = [
        ("route", "/cart/add"),
        ("method", "POST"),
        ("status", "303"),
    ];
    assert_eq!(requests(&samples, "/cart/add", "POST", "303"), 20.0);
    let count = value(
        &samples,
        "statecart_http_request_duration_seconds_count",
        &add,
    );
    assert_eq!(
        count,
        Some(20.0),
        "the histogram counts what the counter does"
    );
    let mut inf = add.to_vec();
    inf.push(("le", "+Inf"));
    let all = value(
        &samples,
        "statecart_http_request_duration_seconds_bucket",
        &inf,
    );
    assert_eq!(all, Some(20.0));
    assert_eq!(requests(&samples, "/cart", "GET", "200"), 20.0);
    assert_eq!(requests(&samples, "/login", "POST", "422"), 1.0);
    assert_eq!(requests(&samples, "/products/{id}", "GET", "404"), 1.0);
    assert_eq!(requests(&samples, "unmatched", "GET", "404"), 1.0);
    for raw in ["/products/999999", "/no-such-page"] {
        assert!(
            !samples.iter().any(|s| s.labels.values().any(|v| v == raw)),
            "the raw path {raw} is a label value"
        );
    }

    let backend = variant.backend().as_str();
    for op in ["load", "save"] {
        let labels = [("backend", backend), ("operation", op)];
        let ops = value(
            &samples,
            "statecart_session_store_duration_seconds_count",
            &labels,
        );
        if variant.server_side() {
            // Each of the 20 adds saves by compare-and-set; each request with a cookie loads.
            assert!(ops.is_some_and(|n| n >= 20.0), "{op}: {ops:?}");
        } else {
            assert_eq!(ops, None, "the cookie backend has no store to time");
        }
    }
    for family in [
        "statecart_session_cas_conflicts_total",
        "statecart_session_cas_retries_total",
        "statecart_session_cas_given_up_total",
    ] {
        let n = value(&samples, family, &[("backend", backend)]);
        assert!(n.is_some(), "{family} for {backend}");
    }
    let login = |outcome| value(&samples, "statecart_logins_total", &[("outcome", outcome)]);
    assert_eq!(login("ok"), Some(1.0));
    assert_eq!(login("wrong_credentials"), Some(1.0));
    assert_eq!(login("throttled"), Some(0.0));
    assert_eq!(login("busy"), Some(0.0));
    // Register hashes once, each login checks once.
    let waits = value(
        &samples,
        "statecart_password_hash_queue_wait_seconds_count",
        &[],
    );
    assert!(waits.is_some_and(|n| n >= 3.0), "{waits:?}");
    // The checkout took stock: the clock moved and the snapshot was rebuilt after the first.
    let version = value(&samples, "statecart_catalog_version", &[]);
    assert!(version.is_some_and(|v| v >= 1.0), "{version:?}");
    let rebuilds = value(&samples, "statecart_catalog_rebuilds_total", &[]);
    assert!(rebuilds.is_some_and(|n| n >= 2.0), "{rebuilds:?}");
    assert_eq!(
        value(&samples, "statecart_guest_sessions_refused_total", &[]),
        Some(0.0)
    );
    for kept in [
        "statecart_live_leases_active",
        "statecart_live_events_sent_total",
        "statecart_live_leases_expired_total",
    ] {
        assert!(value(&samples, kept, &[]).is_some(), "{kept} kept its name");
    }
    if variant == Variant::Memory {
        assert_eq!(value(&samples, "statecart_memory_sessions", &[]), Some(1.0));
    }
}

/// 200 requests to random paths share the `unmatched` series: at most 10 new series.
async fn random_paths_add_at_most_ten_series(variant: Variant) {
    let app = spawn_app(variant).await;
    scripted_traffic(&app).await;
    // The first scrape's own series appear in the next one; Prometheus scrapes all along.
    scrape(&app).await;
    let before = scrape(&app).await;
    let anonymous = common::client();
    for _ in 0..200 {
        let path = format!(
            "/zz{:x}/{:x}?q={:x}",
            rand::random::<u64>(),
            rand::random::<u32>(),
            rand::random::<u16>()
        );
        let res = anonymous.get(app.url(&path)).send().await.expect("GET");
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let after = scrape(&app).await;
    assert!(
        after.len() <= before.len() + 10,
        "{} series before, {} after",
        before.len(),
        after.len()
    );
    assert_eq!(
        requests(&after, "unmatched", "GET", "404") - requests(&before, "unmatched", "GET", "404"),
        200.0,
        "every random path was counted, under one label value"
    );
}

/// `/metrics` describes the process: no cookie, whatever the request carries, and no cache.
async fn metrics_sets_no_cookie_and_is_not_stored(variant: Variant) {
    let app = spawn_app(variant).await;
    app.register("ada").await;
    assert!(app.cookie().is_some(), "the client has a session");
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    common::assert_no_set_cookie(&res, "/metrics");
    let header = |name| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("cache-control").as_deref(), Some("no-store"));
    assert!(
        header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        header("content-type")
    );
}

/// With `metrics_listen`, `/metrics` answers on that listener and nowhere on the shop's port,
/// and it counts the shop's requests.
async fn metrics_listen_moves_metrics_to_their_own_listener(variant: Variant) {
    let app = spawn_app_with(variant, |s| {
        s.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let port = app.metrics_port.expect("a metrics listener");
    assert_ne!(port, app.port);
    assert_eq!(app.get("/").await.status(), StatusCode::OK);
    let shop_side = app.get("/metrics").await;
    assert_eq!(shop_side.status(), StatusCode::NOT_FOUND);
    common::assert_no_set_cookie(&shop_side, "/metrics on the shop's port");
    let res = common::client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let samples = parse(&res.text().await.expect("body"));
    assert_eq!(requests(&samples, "/", "GET", "200"), 1.0);
    assert_eq!(requests(&samples, "/metrics", "GET", "200"), 0.0);
    let elsewhere = common::client()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        elsewhere.status(),
        StatusCode::NOT_FOUND,
        "only /metrics there"
    );
}

/// Logins refused by the per-address limit count as throttled.
async fn refused_logins_count_as_throttled(variant: Variant) {
    let app = spawn_app_with(variant, |s| s.login_rate_limit_per_minute = 1).await;
    // Registering takes the one POST a minute.
    app.register("ada").await;
    let res = app.log_in_as(&common::client(), "ada", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let samples = scrape(&app).await;
    let throttled = [("outcome", "throttled")];
    assert_eq!(
        value(&samples, "statecart_logins_total", &throttled),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "statecart_logins_total", &[("outcome", "ok")]),
        Some(0.0)
    );
}

fn request_id(res: &reqwest::Response) -> String {
    res.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an X-Request-Id on the response")
        .to_owned()
}

/// Every answer carries a request id; one a client sends is ignored unless its peer is a
/// trusted proxy, and even then only a short plain one is kept.
async fn request_ids_come_from_trusted_proxies_only(variant: Variant) {
    let untrusted = spawn_app(variant).await;
    let first = request_id(&untrusted.get("/").await);
    let second = request_id(&untrusted.get("/cart").await);
    assert_eq!(first.len(), 32, "{first}");
    assert_ne!(first, second, "each request gets its own id");
    let res = untrusted
        .client
        .get(untrusted.url("/"))
        .header("x-request-id", "chosen-by-client")
        .send()
        .await
        .expect("GET");
    assert_ne!(request_id(&res), "chosen-by-client");

    let behind_proxy = spawn_app_with(variant, |s| {
        s.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    })
    .await;
    let sent = |id: String| {
        let req = behind_proxy
            .client
            .get(behind_proxy.url("/"))
            .header("x-request-id", id);
        async move { request_id(&req.send().await.expect("GET")) }
    };
    assert_eq!(sent("edge-4711.a:b_c".to_owned()).await, "edge-4711.a:b_c");
    for hostile in ["x".repeat(65), "a b".to_owned(), "a\"b".to_owned()] {
        let echoed = sent(hostile.clone()).await;
        assert_ne!(echoed, hostile);
        assert_eq!(echoed.len(), 32, "a generated id instead of {hostile:?}");
    }
}

/// How many session loads this app's store has timed.
async fn loads(app: &TestApp) -> f64 {
    let backend = app.settings.session_backend.as_str();
    let labels = [("backend", backend), ("operation", "load")];
    let samples = scrape(app).await;
    value(
        &samples,
        "statecart_session_store_duration_seconds_count",
        &labels,
    )
    .expect("a load histogram")
}

/// A cart write on one instance that loses its compare-and-set to the other instance counts
/// one conflict and one retry there, and still lands. The order is forced, not timed: the
/// write's body is held back until its instance has loaded the session (its load count moves),
/// then the other instance saves, then the body goes.
async fn a_save_that_lost_to_another_instance_counts_a_conflict_and_a_retry(variant: Variant) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let a = spawn_app(variant).await;
    let b = common::start(a.settings.clone(), a.data_dir.shared()).await;
    a.register("twins").await;
    let cookie = a.cookie().expect("session cookie");
    let loaded_before = loads(&a).await;

    let body = "product_id=2&quantity=1";
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", a.port))
        .await
        .expect("connect");
    let head = format!(
        "POST /cart/add HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: statecart={cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        a.port,
        body.len()
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    // Wait (bounded, as a hang guard) until instance a has loaded the session for it.
    let mut polls = 0;
    while loads(&a).await == loaded_before {
        polls += 1;
        assert!(polls < 600, "instance a never loaded the session");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let other = common::client_with_cookie(&cookie)
        .post(b.url("/cart/add"))
        .form(&[("product_id", "3"), ("quantity", "1")])
        .send()
        .await
        .expect("POST to b");
    assert_eq!(other.status(), StatusCode::SEE_OTHER);
    slow.write_all(body.as_bytes()).await.expect("body");
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).await.expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");

    let samples = scrape(&a).await;
    let backend = [("backend", a.settings.session_backend.as_str())];
    let counter = |name| value(&samples, name, &backend);
    assert_eq!(counter("statecart_session_cas_conflicts_total"), Some(1.0));
    assert_eq!(counter("statecart_session_cas_retries_total"), Some(1.0));
    assert_eq!(counter("statecart_session_cas_given_up_total"), Some(0.0));
    let mut cart = a.cart_of(&common::client_with_cookie(&cookie)).await;
    cart.sort_unstable();
    assert_eq!(cart, vec![(2, 1), (3, 1)], "both writes landed");
}

for_each_backend!(after_traffic_every_expected_family_is_there);
// Two instances share the session only where the store is shared (not memory, not cookie).
for_backends!(a_save_that_lost_to_another_instance_counts_a_conflict_and_a_retry => sqlite, postgres, redis);
for_backends!(random_paths_add_at_most_ten_series => cookie, memory, sqlite);
for_backends!(metrics_sets_no_cookie_and_is_not_stored => cookie, memory, sqlite);
for_backends!(metrics_listen_moves_metrics_to_their_own_listener => memory, sqlite);
for_backends!(refused_logins_count_as_throttled => memory, sqlite);
for_backends!(request_ids_come_from_trusted_proxies_only => memory, sqlite);

/// With `log_format = "json"` the real binary logs one object per line, and the line that
/// ends a request carries the request id a trusted proxy gave it.
#[tokio::test]
async fn json_logs_carry_the_request_id_of_a_trusted_proxy() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_statecart"))
        .arg("serve")
        .env("STATECART_LOG_FORMAT", "json")
        .env("STATECART_LISTEN", "127.0.0.1:0")
        .env("STATECART_DATA_DIR", dir.path())
        .env("STATECART_SESSION_BACKEND", "memory")
        .env("STATECART_TRUSTED_PROXIES", "127.0.0.1")
        .env("RUST_LOG", "info,sqlx=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn statecart");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, mut next_line) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let address = loop {
        let object = next_object(&mut next_line).await;
        if let Some(address) = object["fields"]["address"].as_str() {
            break address.to_owned();
        }
    };
    let res = common::client()
        .get(format!("http://{address}/about"))
        .header("x-request-id", "edge-join-42")
        .send()
        .await
        .expect("GET");
    assert_eq!(request_id(&res), "edge-join-42");
    let done = loop {
        let object = next_object(&mut next_line).await;
        if object["fields"]["message"] == "done" && object["span"]["path"] == "/about" {
            break object;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(done["span"]["request_id"], "edge-join-42", "{done}");
    assert_eq!(done["fields"]["status"], 200, "{done}");
}

/// The next log line, as JSON. The timeout guards against a hung process; it measures nothing.
async fn next_object(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> serde_json::Value {
    let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.recv())
        .await
        .expect("a log line in time")
        .expect("statecart still logging");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}
