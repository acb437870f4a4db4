//! End-to-end journeys in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver, through the thirtyfour crate), on every session backend this run can test.
//!
//! One test runs every journey for every backend in turn, with one chromedriver and a fresh
//! browser profile per backend: a 2-core machine runs one browser well, not several. Without
//! Chromium the suite says it skipped and passes; with `CI=true` a missing browser fails it.
//! A failing step first saves a screenshot and the page source under `target/e2e-artifacts/`,
//! then fails naming them; with `STATECART_TEST_SCREENSHOTS=1` every step saves them, to look
//! through the journeys afterwards.

mod common;

use std::{
    any::Any,
    io::Write as _,
    net::TcpListener,
    os::unix::process::CommandExt as _,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use common::{PASSWORD, TestApp, Variant, services::in_ci};
use futures_util::FutureExt as _;
use statecart::{
    config::SessionBackend,
    domain::catalog::{self, Money, ProductId},
    session,
};
use tempfile::TempDir;
use thirtyfour::{extensions::query::ElementPollerWithTimeout, prelude::*};

/// Debian's Chromium; `STATECART_TEST_CHROMIUM` names another.
const CHROMIUM: (&str, &str) = ("STATECART_TEST_CHROMIUM", "/usr/bin/chromium");
/// Debian's chromedriver (package chromium-driver); `STATECART_TEST_CHROMEDRIVER` names another.
const CHROMEDRIVER: (&str, &str) = ("STATECART_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");

/// The program `(env var, default path)` names.
fn program((var, default): (&str, &str)) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Headless, and quiet: no GPU, no sandbox (containers), no background traffic to Google.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1280,1000",
];

/// How long any wait for the page may take before the step fails.
const WAIT: Duration = Duration::from_secs(10);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);
/// Journey 7's app: how long a live-update lease lasts, and the poll interval after it.
const LEASE_SECS: u64 = 4;
const POLL_SECS: u64 = 2;

#[tokio::test]
async fn shopping_journeys_work_in_a_real_browser_on_every_backend() {
    let Some(chromedriver) = Chromedriver::start_or_skip().await else {
        return;
    };
    let artifacts = chromedriver.artifacts.clone();
    for variant in Variant::available() {
        let started = Instant::now();
        run_journeys(&chromedriver, variant, &artifacts).await;
        say(&format!(
            "browser journeys passed on {} in {:.1?}",
            name(variant),
            started.elapsed()
        ));
    }
}

/// Every journey, in the order a person would live them, on one backend and one fresh browser.
/// The browser is closed before a failure goes on, so no Chromium outlives the test.
async fn run_journeys(chromedriver: &Chromedriver, variant: Variant, artifacts: &Path) {
    let app = common::spawn_app(variant).await;
    let b = Browser::open(chromedriver, name(variant), artifacts).await;
    let shopper = Shopper {
        username: format!("shopper_{}", name(variant)),
        backend: variant.backend(),
    };
    let journeys = async {
        let products = browse_then_register_and_add_to_cart(&b, &app, &shopper).await;
        session_inspector_follows_the_cart(&b, &app, &shopper, &products).await;
        a_form_from_another_origin_is_refused(&b, &app, &products).await;
        let app = a_restart_keeps_or_ends_the_session(&b, app, &shopper, &products).await;
        change_remove_and_check_out(&b, &app).await;
        after_logout_back_does_not_show_the_cart(&b, &app, &products).await;
        live_cart_updates_for_a_lease_then_polling(&b, variant).await;
    };
    let outcome = AssertUnwindSafe(journeys).catch_unwind().await;
    b.quit().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Who shops, and on what backend.
struct Shopper {
    username: String,
    backend: SessionBackend,
}

impl Shopper {
    /// Whether a graceful restart keeps the session (as the backend promises).
    fn survives_restart(&self) -> bool {
        self.backend.promises().survives_restart
    }

    /// Whether the server keeps the state (so the inspector's server bytes move with the cart).
    fn stateful(&self) -> bool {
        self.backend.promises().state_on_server
    }
}

/// Journey 1: browse the stateless half, fill a cart as a guest, be asked for an account at
/// checkout, register from the login page (the `next` is carried) and find the same cart, then
/// add another product. Returns the catalog's ids.
async fn browse_then_register_and_add_to_cart(
    b: &Browser,
    app: &TestApp,
    shopper: &Shopper,
) -> Vec<i64> {
    b.step("j1-home", async {
        b.goto(&app.url("/")).await?;
        b.el("featured").await?;
        ensure!(
            b.count("product-link").await? > 0,
            "home features no product"
        );
        let backend = b.text("backend").await?;
        ensure!(
            backend == shopper.backend.as_str(),
            "the footer names backend {backend:?}, expected {:?}",
            shopper.backend.as_str()
        );
        anyhow::Ok(())
    })
    .await;

    let products = b
        .step("j1-catalog", async {
            b.click("nav-products").await?;
            b.wait_path("/products").await?;
            b.el("product-list").await?;
            let mut ids = Vec::new();
            for link in b.all("product-link").await? {
                let href = link
                    .attr("href")
                    .await?
                    .context("product link without href")?;
                let id = href
                    .strip_prefix("/products/")
                    .and_then(|id| id.parse::<i64>().ok())
                    .with_context(|| format!("unexpected product link {href}"))?;
                ids.push(id);
            }
            ensure!(ids.len() >= 8, "the catalog lists {} products", ids.len());
            b.all("product-link").await?[0].click().await?;
            b.wait_path(&format!("/products/{}", ids[0])).await?;
            ensure!(!b.text("product-name").await?.is_empty(), "no product name");
            b.el("add-to-cart").await?;
            anyhow::Ok(ids)
        })
        .await;
    let first = products[0];

    b.step("j1-add-as-a-guest", async {
        // No login needed to shop: the first add starts a guest session with the cart.
        b.set_value("add-quantity", "2").await?;
        b.click("add-to-cart").await?;
        b.wait_path("/cart").await?;
        b.wait_text("cart-count", "1").await?;
        b.el("guest-note").await?;
        let lines = b.cart_lines_shown().await?;
        ensure!(lines == [(first, 2)], "the guest cart shows {lines:?}");
        anyhow::Ok(())
    })
    .await;

    b.step("j1-checkout-asks-for-an-account", async {
        b.click("checkout").await?;
        b.wait_path("/login").await?;
        b.el("login-form").await?;
        let next = b.query_param("next").await?;
        ensure!(
            next.as_deref() == Some("/cart"),
            "login carries next={next:?}, expected /cart"
        );
        anyhow::Ok(())
    })
    .await;

    b.step("j1-register-and-keep-the-cart", async {
        b.click("to-register").await?;
        b.wait_path("/register").await?;
        let next = b.query_param("next").await?;
        ensure!(
            next.as_deref() == Some("/cart"),
            "register carries next={next:?}, expected /cart"
        );
        b.type_into("username", &shopper.username).await?;
        b.type_into("password", PASSWORD).await?;
        b.click("register-submit").await?;
        b.wait_path("/cart").await?;
        let flash = b.text("flash").await?;
        ensure!(
            flash.contains("Your cart came with you"),
            "after registering: {flash:?}"
        );
        let lines = b.cart_lines_shown().await?;
        ensure!(lines == [(first, 2)], "the carried cart shows {lines:?}");
        let user = b.text("nav-user").await?;
        ensure!(user == shopper.username, "the header names {user:?}");
        anyhow::Ok(())
    })
    .await;

    b.step("j1-add-second-product", async {
        b.add_from_product_page(app, products[1], 1).await?;
        b.wait_text("cart-count", "2").await?;
        anyhow::Ok(())
    })
    .await;
    products
}

/// The inspector's numbers as the page shows them.
#[derive(Debug, Clone, Copy)]
struct Inspected {
    cookie_bytes: usize,
    server_bytes: usize,
    cart_lines: usize,
}

/// Journey 3: `/session` names the backend and where state lives; its numbers follow the cart.
async fn session_inspector_follows_the_cart(
    b: &Browser,
    app: &TestApp,
    shopper: &Shopper,
    products: &[i64],
) {
    let before = b
        .step("j3-inspector", async {
            b.click("nav-session").await?;
            b.wait_path("/session").await?;
            let backend = b.text("inspector-backend").await?;
            let mode = if shopper.stateful() {
                "stateful"
            } else {
                "stateless"
            };
            ensure!(
                backend == format!("{} ({mode})", shopper.backend.as_str()),
                "the inspector names the backend {backend:?}"
            );
            let location = b.text("state-location").await?;
            let expected = session::facts(shopper.backend).location;
            ensure!(
                location == expected,
                "state lives in {location:?}, expected {expected:?}"
            );
            let user = b.text("inspector-user").await?;
            ensure!(user == shopper.username, "the inspector names {user:?}");
            let seen = b.inspected().await?;
            ensure!(seen.cart_lines == 2, "{seen:?}");
            ensure!(seen.cookie_bytes > 0, "no session cookie counted: {seen:?}");
            if shopper.stateful() {
                ensure!(
                    seen.server_bytes > 0,
                    "nothing stored on the server: {seen:?}"
                );
            } else {
                ensure!(
                    seen.server_bytes == 0,
                    "a stateless server stores: {seen:?}"
                );
            }
            anyhow::Ok(seen)
        })
        .await;

    // Six more lines (about 50 more cookie bytes): well past the few bytes by which the
    // percent-encoding of a fresh encryption makes one cookie longer than another.
    b.step("j3-grow-cart", async {
        for (n, &id) in products[2..8].iter().enumerate() {
            b.add_from_product_page(app, id, 1).await?;
            b.wait_text("cart-count", &(n + 3).to_string()).await?;
        }
        anyhow::Ok(())
    })
    .await;

    b.step("j3-inspector-after-adding", async {
        b.click("nav-session").await?;
        b.wait_path("/session").await?;
        let after = b.inspected().await?;
        ensure!(after.cart_lines == 8, "{after:?}");
        if shopper.stateful() {
            ensure!(
                after.server_bytes > before.server_bytes,
                "server bytes did not grow with the cart: {before:?} -> {after:?}"
            );
            // The cookie only names the session; what it holds stays on the server.
            ensure!(
                after.cookie_bytes < 300,
                "a stateful backend's cookie is {} bytes",
                after.cookie_bytes
            );
        } else {
            ensure!(
                after.cookie_bytes > before.cookie_bytes,
                "the cookie did not grow with the cart: {before:?} -> {after:?}"
            );
            ensure!(
                after.server_bytes == 0,
                "a stateless server stores: {after:?}"
            );
        }
        anyhow::Ok(())
    })
    .await;
}

/// Journey 6: a form on another origin that posts to /cart/add gets 403 and changes nothing.
async fn a_form_from_another_origin_is_refused(b: &Browser, app: &TestApp, products: &[i64]) {
    let before = b
        .step("j6-cart-before", async {
            b.goto(&app.url("/cart")).await?;
            b.el("cart-lines").await?;
            b.cart_lines_shown().await
        })
        .await;
    let other = OtherOrigin::serve(&app.url("/cart/add"), products[0]);

    b.step("j6-submit-from-other-origin", async {
        b.goto(&other.url).await?;
        b.click("other-origin-submit").await?;
        b.wait_path("/cart/add").await?;
        let status = b.text("error-status").await?;
        ensure!(status == "403", "the page shows status {status:?}");
        let http_status = b
            .driver
            .execute(
                "return performance.getEntriesByType('navigation')[0].responseStatus;",
                Vec::new(),
            )
            .await?
            .convert::<u16>()?;
        ensure!(http_status == 403, "the response status is {http_status}");
        anyhow::Ok(())
    })
    .await;
    other.stop().await;

    b.step("j6-cart-unchanged", async {
        b.goto(&app.url("/cart")).await?;
        b.el("cart-lines").await?;
        let after = b.cart_lines_shown().await?;
        ensure!(after == before, "the cart changed: {before:?} -> {after:?}");
        anyhow::Ok(())
    })
    .await;
}

/// Journey 4: a graceful restart on the same data dir (the app comes back on a new port). Cookie
/// and database keep the login and cart; memory sends the browser to log in, with a clear
/// message and never an error page.
async fn a_restart_keeps_or_ends_the_session(
    b: &Browser,
    app: TestApp,
    shopper: &Shopper,
    products: &[i64],
) -> TestApp {
    let before = b
        .step("j4-cart-before-restart", async {
            b.goto(&app.url("/cart")).await?;
            b.el("cart-lines").await?;
            b.cart_lines_shown().await
        })
        .await;
    let app = b
        .step("j4-restart", async move { anyhow::Ok(app.restart().await) })
        .await;

    if shopper.survives_restart() {
        b.step("j4-still-logged-in", async {
            b.goto(&app.url("/cart")).await?;
            b.wait_path("/cart").await?;
            let after = b.cart_lines_shown().await?;
            ensure!(after == before, "the cart changed: {before:?} -> {after:?}");
            let user = b.text("nav-user").await?;
            ensure!(user == shopper.username, "the header names {user:?}");
            anyhow::Ok(())
        })
        .await;
    } else {
        b.step("j4-session-ended", async {
            // The cart page is open to guests: it shows an empty cart and says why.
            b.goto(&app.url("/cart")).await?;
            b.wait_path("/cart").await?;
            ensure!(
                b.count("error-page").await? == 0,
                "an error page after restart"
            );
            let flash = b.text("flash").await?;
            ensure!(
                flash.starts_with("Your session has ended"),
                "the cart page says {flash:?}"
            );
            b.el("cart-empty").await?;
            anyhow::Ok(())
        })
        .await;
        b.step("j4-log-in-again", async {
            b.goto(&app.url("/login?next=%2Fcart")).await?;
            b.el("login-form").await?;
            b.type_into("username", &shopper.username).await?;
            b.type_into("password", PASSWORD).await?;
            b.click("login-submit").await?;
            b.wait_path("/cart").await?;
            b.el("cart-empty").await?;
            b.wait_text("cart-count", "0").await?;
            for &id in &products[..2] {
                b.add_from_product_page(&app, id, 1).await?;
            }
            b.wait_text("cart-count", "2").await?;
            anyhow::Ok(())
        })
        .await;
    }
    app
}

/// Journey 2: change a quantity and remove a line (totals follow), check out, find the order
/// in /orders, and the cart is empty.
async fn change_remove_and_check_out(b: &Browser, app: &TestApp) {
    b.step("j2-change-quantity", async {
        b.goto(&app.url("/cart")).await?;
        let lines = b.cart_lines_shown().await?;
        ensure!(lines.len() >= 2, "the cart has {lines:?}");
        let total_before = b.text("cart-total").await?;
        let (id, quantity) = lines[0];
        let wanted = if quantity == 3 { 2 } else { 3 };
        let row = format!("{}[data-product-id=\"{id}\"]", sel("cart-line"));
        let input = b.find(&format!("{row} {}", sel("line-quantity"))).await?;
        input.clear().await?;
        input.send_keys(wanted.to_string()).await?;
        let update = b.find(&format!("{row} {}", sel("line-update"))).await?;
        b.click_for_new_page(&update).await?;
        b.wait_until(&format!("line {id} shows quantity {wanted}"), async || {
            Ok(b.cart_lines_shown().await?.first() == Some(&(id, wanted)))
        })
        .await?;
        let unit = cents(
            &b.find_text(&format!("{row} {}", sel("line-unit-price")))
                .await?,
        )?;
        let line_total = cents(&b.find_text(&format!("{row} {}", sel("line-total"))).await?)?;
        ensure!(
            line_total == unit * i64::from(wanted),
            "line total {line_total} for {wanted} x {unit}"
        );
        let total = b.text("cart-total").await?;
        ensure!(total != total_before, "the cart total stayed {total}");
        b.totals_add_up().await
    })
    .await;

    b.step("j2-remove-line", async {
        let lines = b.cart_lines_shown().await?;
        let count = lines.len();
        let removes = b.all("line-remove").await?;
        b.click_for_new_page(removes.last().context("no remove button")?)
            .await?;
        b.wait_until(&format!("the cart has {} lines", count - 1), async || {
            Ok(b.count("cart-line").await? == count - 1)
        })
        .await?;
        b.wait_text("cart-count", &(count - 1).to_string()).await?;
        let after = b.cart_lines_shown().await?;
        ensure!(
            after[..] == lines[..count - 1],
            "removing the last line left {after:?}"
        );
        b.totals_add_up().await
    })
    .await;

    let (order_id, total, line_count) = b
        .step("j2-check-out", async {
            let total = b.text("cart-total").await?;
            let line_count = b.count("cart-line").await?;
            b.click("checkout").await?;
            b.wait_until("the order page", async || {
                Ok(b.path().await?.starts_with("/orders/"))
            })
            .await?;
            let path = b.path().await?;
            let order_id: i64 = path["/orders/".len()..]
                .parse()
                .with_context(|| format!("order path {path}"))?;
            let title = b.text("order-title").await?;
            ensure!(
                title == format!("Order #{order_id}"),
                "order title {title:?}"
            );
            let order_total = b.text("order-total").await?;
            ensure!(
                order_total == total,
                "order total {order_total}, cart {total}"
            );
            let ordered = b.count("order-line").await?;
            ensure!(
                ordered == line_count,
                "{ordered} order lines, cart had {line_count}"
            );
            b.wait_text("cart-count", "0").await?;
            anyhow::Ok((order_id, total, line_count))
        })
        .await;

    b.step("j2-orders-list", async {
        b.click("nav-orders").await?;
        b.wait_path("/orders").await?;
        let wanted = format!("#{order_id}");
        let mut found = false;
        for link in b.all("order-link").await? {
            found |= link.text().await? == wanted;
        }
        ensure!(
            found,
            "/orders does not list {wanted} ({total}, {line_count} lines)"
        );
        anyhow::Ok(())
    })
    .await;

    b.step("j2-cart-empty", async {
        b.click("nav-cart").await?;
        b.wait_path("/cart").await?;
        b.el("cart-empty").await?;
        ensure!(b.count("cart-line").await? == 0, "lines after checkout");
        b.click("nav-session").await?;
        b.wait_path("/session").await?;
        let seen = b.inspected().await?;
        ensure!(seen.cart_lines == 0, "the inspector counts {seen:?}");
        anyhow::Ok(())
    })
    .await;
}

/// Journey 5: after logging out, the browser's back button does not show the cart again:
/// stateful pages are `no-store`, so going back asks the server, which wants a login.
async fn after_logout_back_does_not_show_the_cart(b: &Browser, app: &TestApp, products: &[i64]) {
    b.step("j5-cart-with-a-line", async {
        b.add_from_product_page(app, products[0], 1).await?;
        ensure!(b.count("cart-line").await? == 1, "the cart is not shown");
        anyhow::Ok(())
    })
    .await;

    b.step("j5-log-out", async {
        b.click("logout").await?;
        b.wait_path("/login").await?;
        b.el("nav-login").await?;
        let flash = b.text("flash").await?;
        ensure!(flash == "You have logged out.", "after logout: {flash:?}");
        anyhow::Ok(())
    })
    .await;

    b.step("j5-back", async {
        let logged_out_at = b.driver.current_url().await?;
        b.driver.back().await?;
        b.wait_until("the back navigation", async || {
            Ok(b.driver.current_url().await? != logged_out_at)
        })
        .await?;
        // The cart page is never cached (no-store): going back asks the server again, which
        // shows an empty guest cart, with no trace of the ended login.
        let path = b.path().await?;
        ensure!(path == "/cart", "back after logout shows {path}");
        b.el("cart-empty").await?;
        ensure!(
            b.count("cart-line").await? == 0,
            "back after logout shows cart lines"
        );
        ensure!(
            b.count("nav-user").await? == 0,
            "back after logout shows a user"
        );
        anyhow::Ok(())
    })
    .await;
}

/// Journey 7: live cart updates are a lease. On its own app with a short lease
/// (`LEASE_SECS`), a stock change made outside the browser reaches the open cart page without a
/// reload; when the lease ends the page says so and polls every `POLL_SECS` (and holds no
/// lease on the server), a price change still arrives by polling, and "Resume live updates"
/// asks for a new lease.
async fn live_cart_updates_for_a_lease_then_polling(b: &Browser, variant: Variant) {
    let app = common::spawn_app_with(variant, |s| {
        s.live_lease_secs = LEASE_SECS;
        s.poll_interval_secs = POLL_SECS;
    })
    .await;
    let username = format!("live_{}", name(variant));

    let (id, price) = b
        .step("j7-cart-with-two-units", async {
            let products: Vec<serde_json::Value> = app.get("/products.json").await.json().await?;
            let id = products
                .iter()
                .find(|p| p["stock"].as_i64().is_some_and(|stock| stock >= 2))
                .and_then(|p| p["id"].as_i64())
                .context("no product has 2 in stock")?;
            b.register(&app, &username).await?;
            b.add_from_product_page(&app, id, 2).await?;
            let lines = b.cart_lines_shown().await?;
            ensure!(lines == [(id, 2)], "the cart shows {lines:?}");
            let user = b.text("nav-user").await?;
            ensure!(user == username, "the header names {user:?}");
            let price = cents(&b.find_text(&line(id, "line-unit-price")).await?)?;
            // Every later step checks this mark: the page they look at was never reloaded.
            b.driver
                .execute("window.statecartSamePage = true;", Vec::new())
                .await?;
            anyhow::Ok((id, price))
        })
        .await;

    b.step("j7-live", async {
        let text = b.wait_live_state("live", WAIT).await?;
        let until = text
            .strip_prefix("Live updates until ")
            .and_then(clock_secs)
            .with_context(|| format!("the status reads {text:?}"))?;
        // The time shown is when the lease ends: at most LEASE_SECS from now, in local time.
        let now = b
            .driver
            .execute(
                "const d = new Date(); \
                 return d.getHours() * 3600 + d.getMinutes() * 60 + d.getSeconds();",
                Vec::new(),
            )
            .await?
            .convert::<i64>()?;
        let ahead = (until - now + 43_200).rem_euclid(86_400) - 43_200;
        ensure!(
            (-1..=i64::try_from(LEASE_SECS)? + 1).contains(&ahead),
            "the status reads {text:?}, {ahead} s from now; the lease is {LEASE_SECS} s"
        );
        ensure!(
            !b.el("live-resume").await?.is_displayed().await?,
            "\"Resume live updates\" shows during a lease"
        );
        ensure!(
            b.el("checkout").await?.is_enabled().await?,
            "checkout is disabled before any change"
        );
        anyhow::Ok(())
    })
    .await;

    let pushed = b
        .step("j7-stock-drops-live", async {
            catalog::set_stock(&app.db().await, product_id(id)?, 1).await?;
            let note = line(id, "line-stock");
            let mut seen = String::new();
            b.wait_until("the line to say \"Only 1 left\"", async || {
                let el = b.find(&note).await?;
                seen = el.text().await?;
                Ok(el.is_displayed().await? && seen == "Only 1 left")
            })
            .await
            .with_context(|| format!("the stock note reads {seen:?}"))?;
            b.wait_until("checkout to be disabled", async || {
                Ok(!b.el("checkout").await?.is_enabled().await?)
            })
            .await?;
            let blocked = b.el("checkout-blocked").await?;
            ensure!(blocked.is_displayed().await?, "checkout-blocked is hidden");
            let why = blocked.text().await?;
            let product = b.find_text(&line(id, "line-name")).await?;
            ensure!(
                !product.is_empty() && why.contains(&product),
                "checkout-blocked reads {why:?}, which does not name {product:?}"
            );
            b.ensure_same_page().await?;
            // Pushed down the lease, not found by a poll that happened to come first.
            let pushed = metric(&app, "statecart_live_events_sent_total").await?;
            ensure!(pushed >= 1, "the server sent {pushed} change events");
            anyhow::Ok(pushed)
        })
        .await;

    b.step("j7-lease-ends", async {
        let text = b
            .wait_live_state("polling", Duration::from_secs(LEASE_SECS) + WAIT)
            .await?;
        let paused = format!("Live updates paused: checking every {POLL_SECS} s");
        ensure!(
            text == paused,
            "the status reads {text:?}, expected {paused:?}"
        );
        ensure!(
            b.el("live-resume").await?.is_displayed().await?,
            "no \"Resume live updates\" after the lease"
        );
        b.ensure_same_page().await?;
        // The stream ends just after it says lease-expired, and the lease with it.
        b.wait_until("no lease on the server", async || {
            Ok(metric(&app, "statecart_live_leases_active").await? == 0)
        })
        .await
    })
    .await;

    // The page must keep polling, with no lease, for longer than EventSource's 3 s reconnect
    // delay: a stream the page forgot to close would open a new lease by then. Meanwhile a
    // price change arrives by a poll.
    b.step("j7-price-change-by-polling", async {
        let new_price = price + 1_111;
        catalog::set_price(&app.db().await, product_id(id)?, new_price).await?;
        let unit = Money::from_cents(new_price).to_string();
        let total = Money::from_cents(new_price * 2).to_string();
        let watch = Duration::from_secs(3 * POLL_SECS);
        let started = Instant::now();
        let mut arrived = None;
        let mut seen = (String::new(), String::new());
        b.keeps("polling with no lease", watch, async || {
            let (state, text) = b.live_status().await?;
            ensure!(state == "polling", "the status is {state:?}: {text:?}");
            let active = metric(&app, "statecart_live_leases_active").await?;
            ensure!(active == 0, "{active} leases while the page polls");
            if arrived.is_none() {
                seen = (
                    b.find_text(&line(id, "line-unit-price")).await?,
                    b.text("cart-total").await?,
                );
                if seen.0 == unit && seen.1 == total {
                    arrived = Some(started.elapsed());
                }
            }
            Ok(())
        })
        .await?;
        ensure!(
            arrived.is_some(),
            "after {watch:?} unit price and total read {seen:?}, not {unit} and {total}"
        );
        let line_total = b.find_text(&line(id, "line-total")).await?;
        ensure!(line_total == total, "the line total reads {line_total:?}");
        b.totals_add_up().await?;
        b.ensure_same_page().await?;
        // A poll brought it: nothing was pushed since the lease ended.
        let sent = metric(&app, "statecart_live_events_sent_total").await?;
        ensure!(
            sent == pushed,
            "{sent} change events sent, {pushed} before the lease ended"
        );
        anyhow::Ok(())
    })
    .await;

    b.step("j7-resume", async {
        b.click("live-resume").await?;
        let text = b.wait_live_state("live", WAIT).await?;
        ensure!(
            text.strip_prefix("Live updates until ")
                .and_then(clock_secs)
                .is_some(),
            "the status reads {text:?}"
        );
        ensure!(
            !b.el("live-resume").await?.is_displayed().await?,
            "\"Resume live updates\" still shows"
        );
        b.ensure_same_page().await?;
        let active = metric(&app, "statecart_live_leases_active").await?;
        ensure!(active == 1, "{active} leases after resuming");
        anyhow::Ok(())
    })
    .await;
}

/// A CSS selector for a `data-test` element in the cart line of product `id`.
fn line(id: i64, test: &str) -> String {
    format!(
        "{}[data-product-id=\"{id}\"] {}",
        sel("cart-line"),
        sel(test)
    )
}

fn product_id(id: i64) -> Result<ProductId> {
    ProductId::parse(&id.to_string()).with_context(|| format!("not a product id: {id}"))
}

/// Seconds since midnight from a clock as the page shows it (`14:05:30`).
fn clock_secs(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split(':').collect();
    let [h, m, s] = parts[..] else {
        return None;
    };
    if [h, m, s].iter().any(|p| p.len() != 2) {
        return None;
    }
    let (h, m, s): (i64, i64, i64) = (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?);
    (h < 24 && m < 60 && s < 60).then_some(h * 3600 + m * 60 + s)
}

/// A value of the app's `/metrics`, read over HTTP as a scraper would.
async fn metric(app: &TestApp, name: &str) -> Result<u64> {
    let body = reqwest::get(format!("{}/metrics", app.address))
        .await?
        .error_for_status()?
        .text()
        .await?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .with_context(|| format!("/metrics has no {name}:\n{body}"))?
        .parse()
        .with_context(|| format!("/metrics: {name} is not a number"))
}

/// A CSS selector for a `data-test` name.
fn sel(test: &str) -> String {
    format!("[data-test=\"{test}\"]")
}

/// Cents from money as the shop shows it (`$1,234.50`).
fn cents(text: &str) -> Result<i64> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    ensure!(
        text.starts_with('$') && digits.len() >= 3,
        "not an amount: {text:?}"
    );
    Ok(digits.parse()?)
}

/// The lowercase variant name, for messages and artifact files.
fn name(variant: Variant) -> String {
    format!("{variant:?}").to_lowercase()
}

/// Writes past the test harness's capture, so a plain `cargo test` shows it.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The message of a panic payload.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Our own chromedriver on a free port; killed when dropped, also when a journey panics.
struct Chromedriver {
    url: String,
    artifacts: PathBuf,
    child: Child,
    // Chromedriver and Chromium want a writable HOME; removed after the child is killed.
    _home: TempDir,
}

impl Chromedriver {
    /// Starts chromedriver, or says why the suite is skipped (and fails instead on CI).
    async fn start_or_skip() -> Option<Self> {
        let missing: Vec<String> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .map(program)
            .filter(|path| !path.is_file())
            .map(|path| path.display().to_string())
            .collect();
        if !missing.is_empty() {
            let why = format!(
                "{} not found (apt-get install chromium chromium-driver)",
                missing.join(" and ")
            );
            assert!(!in_ci(), "browser suite cannot run with CI=true: {why}");
            say(&format!("browser suite skipped: {why}"));
            return None;
        }
        let artifacts = artifacts_dir();
        let mut last_error = None;
        // A port picked free can be taken before chromedriver binds it: try a few.
        for _ in 0..3 {
            match Self::start(&artifacts).await {
                Ok(driver) => return Some(driver),
                Err(err) => last_error = Some(err),
            }
        }
        panic!("chromedriver did not start: {last_error:?}");
    }

    async fn start(artifacts: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let home = tempfile::tempdir()?;
        let log = std::fs::File::create(artifacts.join("chromedriver.log"))?;
        let child = Command::new(program(CHROMEDRIVER))
            .arg(format!("--port={port}"))
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group, which the Chromiums it starts join: see `drop`.
            .process_group(0)
            .spawn()
            .context("spawn chromedriver")?;
        let mut driver = Self {
            url: format!("http://127.0.0.1:{port}"),
            artifacts: artifacts.to_owned(),
            child,
            _home: home,
        };
        driver.wait_ready().await?;
        Ok(driver)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("chromedriver exited with {status}");
            }
            let status = client.get(format!("{}/status", self.url)).send().await;
            if let Ok(res) = status
                && res.status().is_success()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver not ready after 20 s"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // Sessions are quit before this; should one have been lost, its Chromium is still in
        // chromedriver's process group, so end the whole group, while its id is surely ours.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/e2e-artifacts/`, emptied of an earlier run's files.
fn artifacts_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target dir");
    let dir = target.join("e2e-artifacts");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create target/e2e-artifacts");
    dir
}

/// One WebDriver session in a fresh Chromium profile, named after its backend.
struct Browser {
    driver: WebDriver,
    label: String,
    artifacts: PathBuf,
    // Declared after the driver, so the session ends before its profile is removed.
    _profile: TempDir,
}

impl Browser {
    async fn open(chromedriver: &Chromedriver, label: String, artifacts: &Path) -> Self {
        let profile = tempfile::tempdir().expect("browser profile dir");
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(&program(CHROMIUM).to_string_lossy())
            .expect("binary");
        for arg in CHROMIUM_ARGS {
            caps.add_arg(arg).expect("arg");
        }
        caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))
            .expect("arg");
        let driver = WebDriver::builder(chromedriver.url.as_str(), caps)
            .poller(Arc::new(ElementPollerWithTimeout::new(WAIT, POLL)))
            .request_timeout(Duration::from_secs(60))
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "no browser session on {label} (see {}): {err}",
                    artifacts.join("chromedriver.log").display()
                )
            });
        driver
            .set_page_load_timeout(Duration::from_secs(30))
            .await
            .expect("page load timeout");
        Self {
            driver,
            label,
            artifacts: artifacts.to_owned(),
            _profile: profile,
        }
    }

    /// Ends the WebDriver session, which closes this Chromium.
    async fn quit(self) {
        let Self {
            driver, _profile, ..
        } = self;
        if let Err(err) = driver.quit().await {
            say(&format!("closing the browser failed: {err}"));
        }
    }

    /// Runs one journey step. If it fails (an error or a failed assertion), saves a screenshot
    /// and the page source first, then fails the test naming them.
    async fn step<T>(&self, step: &str, body: impl Future<Output = Result<T>>) -> T {
        let failure = match AssertUnwindSafe(body).catch_unwind().await {
            Ok(Ok(value)) => {
                if std::env::var_os("STATECART_TEST_SCREENSHOTS").is_some() {
                    self.capture(step).await;
                }
                return value;
            }
            Ok(Err(err)) => format!("{err:#}"),
            Err(panic) => panic_message(&*panic),
        };
        let saved = self.capture(step).await;
        panic!(
            "browser journey failed on {} at step {step}: {failure}\n{saved}",
            self.label
        );
    }

    /// Saves what the browser shows now as `<backend>-<step>.png` and `.html`, and says where.
    async fn capture(&self, step: &str) -> String {
        let base = format!("{}-{step}", self.label);
        let png = self.artifacts.join(format!("{base}.png"));
        let html = self.artifacts.join(format!("{base}.html"));
        let mut lines = Vec::new();
        match self.driver.current_url().await {
            Ok(url) => lines.push(format!("  page: {url}")),
            Err(err) => lines.push(format!("  page: unknown ({err})")),
        }
        match self.driver.screenshot(&png).await {
            Ok(()) => lines.push(format!("  screenshot: {}", png.display())),
            Err(err) => lines.push(format!("  screenshot not saved: {err}")),
        }
        let source = self.driver.source().await.map_err(anyhow::Error::from);
        match source.and_then(|s| Ok(std::fs::write(&html, s)?)) {
            Ok(()) => lines.push(format!("  page source: {}", html.display())),
            Err(err) => lines.push(format!("  page source not saved: {err:#}")),
        }
        let saved = lines.join("\n");
        say(&format!("browser artifacts for {base}:\n{saved}"));
        saved
    }

    async fn goto(&self, url: &str) -> Result<()> {
        self.driver
            .goto(url)
            .await
            .with_context(|| format!("open {url}"))
    }

    /// The path of the page shown.
    async fn path(&self) -> Result<String> {
        Ok(self.driver.current_url().await?.path().to_owned())
    }

    /// A query parameter of the page shown.
    async fn query_param(&self, key: &str) -> Result<Option<String>> {
        let url = self.driver.current_url().await?;
        Ok(url
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned()))
    }

    /// Waits, boundedly, until `check` says yes; its errors count as "not yet".
    async fn wait_until(&self, what: &str, check: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
        self.wait_within(what, WAIT, check).await
    }

    /// Waits until `check` says yes, for at most `within`; its errors count as "not yet".
    async fn wait_within(
        &self,
        what: &str,
        within: Duration,
        mut check: impl AsyncFnMut() -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let last = match check().await {
                Ok(true) => return Ok(()),
                Ok(false) => String::new(),
                Err(err) => format!(" (last error: {err:#})"),
            };
            if Instant::now() >= deadline {
                bail!("waited {within:?} for {what}{last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Checks, every `POLL` for `during`, that `check` passes; fails at the first look that
    /// does not. For what must not happen, which only watching for a while can show.
    async fn keeps(
        &self,
        what: &str,
        during: Duration,
        mut check: impl AsyncFnMut() -> Result<()>,
    ) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < during {
            check()
                .await
                .with_context(|| format!("{what} stopped after {:.1?}", started.elapsed()))?;
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Waits until the page shown has this path.
    async fn wait_path(&self, path: &str) -> Result<()> {
        let mut seen = String::new();
        self.wait_until(&format!("the page {path}"), async || {
            seen = self.path().await?;
            Ok(seen == path)
        })
        .await
        .with_context(|| format!("the browser shows {seen}"))
    }

    /// Waits until the `data-test` element's text is `text`.
    async fn wait_text(&self, test: &str, text: &str) -> Result<()> {
        let mut seen = String::new();
        self.wait_until(&format!("{test} to read {text:?}"), async || {
            seen = self.find_text(&sel(test)).await?;
            Ok(seen == text)
        })
        .await
        .with_context(|| format!("{test} reads {seen:?}"))
    }

    /// The first element matching `css`, waiting for it.
    async fn find(&self, css: &str) -> Result<WebElement> {
        self.driver
            .query(By::Css(css))
            .first()
            .await
            .with_context(|| format!("no element {css}"))
    }

    async fn find_text(&self, css: &str) -> Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    /// The `data-test` element, waiting for it.
    async fn el(&self, test: &str) -> Result<WebElement> {
        self.find(&sel(test)).await
    }

    async fn text(&self, test: &str) -> Result<String> {
        self.find_text(&sel(test)).await
    }

    async fn click(&self, test: &str) -> Result<()> {
        self.el(test)
            .await?
            .click()
            .await
            .with_context(|| format!("click {test}"))
    }

    /// Clicks a button that reloads the page it is on, and waits for the new page: the old one
    /// may already show what the new one should (a typed quantity), so mark it first.
    async fn click_for_new_page(&self, button: &WebElement) -> Result<()> {
        self.driver
            .execute("window.statecartOldPage = true;", Vec::new())
            .await?;
        button.click().await?;
        self.wait_until("the next page", async || {
            let script = "return !window.statecartOldPage && document.readyState === 'complete';";
            Ok(self
                .driver
                .execute(script, Vec::new())
                .await?
                .convert::<bool>()?)
        })
        .await
    }

    /// Every `data-test` element on the page now (no wait).
    async fn all(&self, test: &str) -> Result<Vec<WebElement>> {
        Ok(self.driver.find_all(By::Css(sel(test))).await?)
    }

    async fn count(&self, test: &str) -> Result<usize> {
        Ok(self.all(test).await?.len())
    }

    async fn type_into(&self, test: &str, text: &str) -> Result<()> {
        let input = self.el(test).await?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    /// Replaces an input's value and checks the page took it.
    async fn set_value(&self, test: &str, value: &str) -> Result<()> {
        self.type_into(test, value).await?;
        let now = self.el(test).await?.value().await?;
        ensure!(now.as_deref() == Some(value), "{test} holds {now:?}");
        Ok(())
    }

    /// Registers `username` from the register page; the browser is then logged in.
    async fn register(&self, app: &TestApp, username: &str) -> Result<()> {
        self.goto(&app.url("/register")).await?;
        self.type_into("username", username).await?;
        self.type_into("password", PASSWORD).await?;
        self.click("register-submit").await?;
        self.wait_until("the page after registering", async || {
            Ok(self.path().await? != "/register")
        })
        .await
    }

    /// The cart's live-update status: its `data-state` and what it reads.
    async fn live_status(&self) -> Result<(String, String)> {
        let status = self.el("live-status").await?;
        let state = status.attr("data-state").await?.unwrap_or_default();
        Ok((state, status.text().await?))
    }

    /// Waits, for at most `within`, until the live-update status is in `state`; returns what
    /// it reads then.
    async fn wait_live_state(&self, state: &str, within: Duration) -> Result<String> {
        let mut seen = (String::new(), String::new());
        self.wait_within(&format!("live-status {state}"), within, async || {
            seen = self.live_status().await?;
            Ok(seen.0 == state)
        })
        .await
        .with_context(|| format!("live-status is {:?}: {:?}", seen.0, seen.1))?;
        Ok(seen.1)
    }

    /// Checks the page was not reloaded since it was marked `window.statecartSamePage`.
    async fn ensure_same_page(&self) -> Result<()> {
        let same = self
            .driver
            .execute("return window.statecartSamePage === true;", Vec::new())
            .await?
            .convert::<bool>()?;
        ensure!(same, "the page was reloaded");
        Ok(())
    }

    /// Adds `quantity` of a product from its page, and waits for the cart page that follows.
    async fn add_from_product_page(&self, app: &TestApp, id: i64, quantity: u32) -> Result<()> {
        self.goto(&app.url(&format!("/products/{id}"))).await?;
        self.set_value("add-quantity", &quantity.to_string())
            .await?;
        self.click("add-to-cart").await?;
        self.wait_path("/cart").await
    }

    /// The cart as the page shows it: `(product id, quantity)` per line.
    async fn cart_lines_shown(&self) -> Result<Vec<(i64, u32)>> {
        let mut lines = Vec::new();
        for row in self.all("cart-line").await? {
            let id = row
                .attr("data-product-id")
                .await?
                .context("a cart line without data-product-id")?
                .parse()?;
            let quantity = row
                .find(By::Css(sel("line-quantity")))
                .await?
                .value()
                .await?
                .context("a quantity without value")?
                .parse()?;
            lines.push((id, quantity));
        }
        Ok(lines)
    }

    /// Checks that the cart total is the sum of the line totals.
    async fn totals_add_up(&self) -> Result<()> {
        let mut sum = 0;
        for line_total in self.all("line-total").await? {
            sum += cents(&line_total.text().await?)?;
        }
        let total = cents(&self.text("cart-total").await?)?;
        ensure!(total == sum, "cart total {total}, lines add up to {sum}");
        Ok(())
    }

    /// The inspector's numbers on the `/session` page shown.
    async fn inspected(&self) -> Result<Inspected> {
        let number = async |test: &str| -> Result<usize> {
            let text = self.text(test).await?;
            text.parse()
                .with_context(|| format!("{test} is not a number: {text:?}"))
        };
        Ok(Inspected {
            cookie_bytes: number("cookie-bytes").await?,
            server_bytes: number("server-bytes").await?,
            cart_lines: number("cart-lines").await?,
        })
    }
}

/// A page on another origin (another port) whose form posts to the shop, as a hostile site's
/// would.
struct OtherOrigin {
    url: String,
    handle: actix_web::dev::ServerHandle,
}

impl OtherOrigin {
    /// Serves the form on a free port of 127.0.0.1 (same host, other port: another origin).
    fn serve(action: &str, product_id: i64) -> Self {
        let page = format!(
            "<!doctype html><title>Another site</title>\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"product_id\" value=\"{product_id}\">\
             <input type=\"hidden\" name=\"quantity\" value=\"5\">\
             <button type=\"submit\" data-test=\"other-origin-submit\">Win a prize</button>\
             </form>"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind another origin");
        let port = listener.local_addr().expect("address").port();
        let server = actix_web::HttpServer::new(move || {
            let page = page.clone();
            actix_web::App::new().default_service(actix_web::web::to(move || {
                let page = page.clone();
                async move {
                    actix_web::HttpResponse::Ok()
                        .content_type("text/html; charset=utf-8")
                        .body(page)
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen on another origin")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/"),
            handle,
        }
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}
