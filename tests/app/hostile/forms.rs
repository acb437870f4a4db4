//! Hostile values in every form field and body: credentials, cart, checkout, admin, live.

use reqwest::{Method, StatusCode, header::HeaderValue};

use crate::{
    common::{self, PASSWORD, Variant},
    hostile::driver::*,
};

/// Login and registration refuse hostile names and passwords with the form's own answer.
async fn hostile_credentials_get_the_generic_answer(variant: Variant) {
    let shop = shop(variant).await;
    let pw = PASSWORD.replace(' ', "+");
    // A hostile username with the right password.
    let named = |username: &str| format!("username={username}&password={pw}");
    // Each case posts this body to the form its closure names.
    let login = |what: &str, body: &str, expect: &[u16]| {
        post(&format!("login, {what}"), "/login", body, expect)
    };
    let register = |what: &str, body: &str, expect: &[u16]| {
        post(&format!("register, {what}"), "/register", body, expect)
    };
    let cases = vec![
        login("NUL in the username", &named("vic%00"), &[422]),
        login(
            "bidi override in the username",
            &named("%E2%80%AEvic"),
            &[422],
        ),
        login(
            "15 KB username",
            &format!("username={}&password=x", big(15_000)),
            &[422],
        ),
        login(
            "5 KB password",
            &format!("username=vic&password={}", big(5_000)),
            &[422],
        ),
        login("non-UTF-8 username", "username=%FF%FE&password=x", &[422]),
        login("raw non-UTF-8 body", "", &[400, 422]).body(
            "application/x-www-form-urlencoded",
            b"username=\xff\xfe&password=\xc3".to_vec(),
        ),
        login("no fields", "", &[422]),
        login(
            "username twice",
            "username=vic&username=root&password=x",
            &[400],
        ),
        login("JSON body", "", &[400, 415]).body(
            "application/json",
            br#"{"username":"vic","password":"x"}"#.to_vec(),
        ),
        login(
            "20 KB body",
            &format!("username=vic&password={}", big(20_000)),
            &[413],
        ),
        login("SQL in the username", "username=vic'--&password=x", &[422]),
        login(
            "the right password with a trailing NUL",
            &format!("username=vic&password={pw}%00"),
            &[422],
        ),
        register("bidi override", &named("vic%E2%80%AE"), &[422]),
        register("NUL", &named("ad%00min"), &[422]),
        register("zero-width space", &named("v%E2%80%8Bic"), &[422]),
        register(
            "2 KB password",
            &format!("username=newbie&password={}", big(2_000)),
            &[422],
        ),
        register("33-character name", &named(&big(33)), &[422]),
        register(
            "the victim's name in other letter case",
            &named("VIC"),
            &[422],
        ),
        register("markup in the name", &named("%3Cscript%3E"), &[422]),
        post(
            "register, a percent-encoded path",
            "/%72egister",
            &named("%00"),
            &[422],
        ),
        register(
            "password twice",
            &format!("username=newbie&password={pw}&password=x"),
            &[400],
        ),
        login(
            "next with a bidi override",
            "username=vic&password=x&next=/%E2%80%AEgpj.exe",
            &[422],
        ),
        login(
            "next of 4 KB",
            &format!("username=vic&password=x&next=/{}", big(4_000)),
            &[422],
        ),
        login(
            "next twice",
            "username=vic&password=x&next=/a&next=//evil.example",
            &[400],
        ),
        register(
            "next non-UTF-8",
            "username=vic&password=x&next=%FF%FE",
            &[422],
        ),
    ];
    // Every case comes from a client with no session.
    let cases = cases.into_iter().map(Case::anonymous).collect();
    shop.run("credentials", cases).await;
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
    // Each case posts this body to /checkout.
    let checkout = |name: &str, body: &str, expect: &[u16]| post(name, "/checkout", body, expect);
    let cases = vec![
        checkout("20 KB form", &format!("rev=2&pad={}", big(20_000)), &[413]),
        checkout("JSON body", "", &[415]).body("application/json", br#"{"rev":2}"#.to_vec()),
        checkout("text/plain body", "", &[415]).body("text/plain", b"rev=2".to_vec()),
        checkout("rev twice", "rev=1&rev=2", &[400]),
        checkout("rev not a number", "rev=abc", &[400]),
        checkout("rev negative", "rev=-1", &[400]),
        checkout("rev with a bidi override", "rev=%E2%80%AE2", &[400]),
        checkout("rev non-UTF-8", "rev=%FF", &[400]),
        checkout("rev stale", "rev=0", &[409]),
        checkout("rev from the future", "rev=99999", &[409]),
        checkout("anonymous", "", &[303]).anonymous(),
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
    // Each case posts this body to the admin form, as the admin `vic`.
    let admin =
        |name: &str, body: &str, expect: &[u16]| post(name, "/admin/products", body, expect);
    // Hostile prices for product 1, each refused with the form's 422.
    let prices = [
        ("with NUL", "1%00"),
        ("with a bidi override", "%E2%80%AE1"),
        ("non-UTF-8", "%FF"),
        ("25 digits", "9999999999999999999999999"),
        ("over the maximum", "100000001"),
        ("negative", "-1"),
        ("as a float", "1.5"),
    ];
    let mut cases: Vec<Case> = prices
        .iter()
        .map(|(what, cents)| {
            let body = format!("product_id=1&price_cents={cents}");
            admin(&format!("price {what}"), &body, &[422])
        })
        .collect();
    cases.extend([
        admin(
            "stock over the maximum",
            "product_id=1&stock=1000001",
            &[422],
        ),
        admin("stock twice", "product_id=1&stock=1&stock=2", &[400]),
        admin("product with NUL", "product_id=1%00&stock=1", &[400]),
        admin(
            "product overlong",
            &format!("product_id={}&stock=1", "9".repeat(5000)),
            &[400],
        ),
        admin("no product", "stock=1", &[400]),
        admin(
            "20 KB body",
            &format!("product_id=1&stock=1&pad={}", big(20_000)),
            &[413],
        ),
        admin("JSON body", "", &[400, 415]).body(
            "application/json",
            br#"{"product_id":1,"stock":0}"#.to_vec(),
        ),
        admin(
            "cross-site, even for an admin",
            "product_id=1&stock=0",
            &[403],
        )
        .header("sec-fetch-site", "cross-site"),
    ]);
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
    // Many streams of one user, each a lease: the process keeps answering (which lease ends
    // first is live.rs `the_registry_is_bounded_and_ends_the_oldest_lease_first`).
    let mut streams = Vec::new();
    for _ in 0..8 {
        let res = shop.app.get("/cart/live").await;
        assert_eq!(res.status(), StatusCode::OK);
        streams.push(res);
    }
    drop(streams);
    assert_eq!(shop.app.get("/healthz").await.status(), StatusCode::OK);
}

/// "Log out" of one session refuses every handle that is not one of the victim's other
/// sessions, and ends nothing: the victim's other browser stays logged in. (The cookie backend
/// runs with `cookie_revocation`, the only way it can end one session.)
async fn hostile_session_handles_end_no_session(variant: Variant) {
    let shop = shop_with(variant, |s| {
        if s.session_backend == statecart::config::SessionBackend::Cookie {
            s.cookie_revocation = true;
        }
    })
    .await;
    let other = shop.app.login_new_client("vic").await;
    let page = shop.app.page("/account").await;
    let handle = page
        .split(r#"name="session" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the other session's Log out button")
        .to_owned();
    let path = "/account/sessions/revoke";
    let with = |what: &str, form: &str, expect: &[u16]| post(what, path, form, expect);
    let cases = vec![
        with("no field", "", &[400]),
        with("empty handle", "session=", &[400]),
        with("SQL", "session=x%27+OR+%271%27%3D%271", &[400]),
        with(
            "23 characters",
            &format!("session={}", &handle[..23]),
            &[400],
        ),
        with("25 characters", &format!("session={handle}A"), &[400]),
        with("NUL", &format!("session={}%00", &handle[..23]), &[400]),
        with(
            "bidi override",
            &format!("session=%E2%80%AE{}", &handle[..21]),
            &[400],
        ),
        with("non-UTF-8", "session=%FF%FE", &[400]),
        with("15 KB handle", &format!("session={}", big(15_000)), &[400]),
        with("20 KB body", &format!("session={}", big(20_000)), &[413]),
        with(
            "handle twice",
            &format!("session={handle}&session={handle}"),
            &[400],
        ),
        with("unknown handle", "session=AAAAAAAAAAAAAAAAAAAAAAAA", &[404]),
        with(
            "the victim's cookie",
            &format!("session={}", shop.app.cookie().expect("cookie")),
            &[400],
        ),
        post("JSON body", path, "", &[400, 415]).body(
            "application/json",
            format!(r#"{{"session":"{handle}"}}"#).into_bytes(),
        ),
        with(
            "real handle, cross-site",
            &format!("session={handle}"),
            &[403],
        )
        .header("sec-fetch-site", "cross-site"),
        with(
            "real handle, no login",
            &format!("session={handle}"),
            &[303],
        )
        .anonymous(),
        with(
            "real handle, garbage cookie",
            &format!("session={handle}"),
            &[303],
        )
        .cookie(HeaderValue::from_static("statecart=garbage")),
        case("GET", Method::GET, path, &[404, 405]),
    ];
    shop.run("session handles", cases).await;
    assert!(
        shop.app.is_logged_in(&other).await,
        "the victim's other session was not ended"
    );
}

for_each_backend!(
    hostile_session_handles_end_no_session,
    hostile_credentials_get_the_generic_answer,
    malformed_cart_forms_leave_the_cart_alone,
    unreadable_checkouts_order_nothing,
    admin_is_refused_to_non_admins,
    hostile_admin_values_change_no_price_or_stock,
    live_endpoints_refuse_abuse,
);
