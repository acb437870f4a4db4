//! End-to-end journeys in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver, through the thirtyfour crate), on every session backend this run can test.
//!
//! One test runs every journey for every backend in turn, with one chromedriver and a fresh
//! browser profile per backend: a 2-core machine runs one browser well, not several. Without
//! Chromium the suite says it skipped and passes; with `CI=true` a missing browser fails it.
//! A failing step first saves a screenshot and the page source under `target/e2e-artifacts/`,
//! then fails naming them; with `STATECART_TEST_SCREENSHOTS=1` every step saves them, to look
//! through the journeys afterwards.

#[path = "../common/mod.rs"]
mod common;
mod driver;

use std::{
    panic::AssertUnwindSafe,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use common::{TestApp, Variant};
use driver::*;
use futures_util::FutureExt as _;
use statecart::{
    config::SessionBackend,
    domain::catalog::{self, Money, ProductId},
    session,
};

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
        text_is_readable_where_a_visitor_logs_in(&b, &app).await;
        let products = browse_then_register_and_add_to_cart(&b, &app, &shopper).await;
        session_inspector_follows_the_cart(&b, &app, &shopper, &products).await;
        a_form_from_another_origin_is_refused(&b, &app, &products).await;
        let app = a_restart_keeps_or_ends_the_session(&b, app, &shopper, &products).await;
        change_remove_and_check_out(&b, &app).await;
        after_logout_back_does_not_show_the_cart(&b, &app, &products).await;
        live_cart_updates_for_a_lease_then_polling(&b, variant).await;
        one_browser_logs_the_other_out_from_the_account_page(&b, chromedriver, variant, artifacts)
            .await;
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

/// WCAG 2 contrast of every text element on the page against the background it is drawn on
/// (the first opaque background up its ancestors), the way axe-core's `color-contrast` rule
/// measures it: 4.5:1 for normal text, 3:1 for large (24px, or 18.66px bold). Returns the
/// elements below it. Elements over a background image are not judged.
const LOW_CONTRAST_JS: &str = r#"
const lin = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
const lum = ([r, g, b]) => 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
const rgba = s => (s.match(/[\d.]+/g) || []).map(Number);
const failures = [];
for (const el of document.querySelectorAll('body *')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  const rect = el.getBoundingClientRect();
  if (!own || rect.width === 0 || rect.height === 0) continue;
  const style = getComputedStyle(el);
  if (style.visibility === 'hidden' || Number(style.opacity) === 0) continue;
  let bg = null, image = false;
  for (let n = el; n; n = n.parentElement) {
    const s = getComputedStyle(n);
    if (s.backgroundImage !== 'none') { image = true; break; }
    const c = rgba(s.backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] === 1)) { bg = c.slice(0, 3); break; }
  }
  if (image) continue;
  bg = bg || [255, 255, 255];
  const fg = rgba(style.color).slice(0, 3);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
  const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  if (ratio < needed) failures.push(`${el.tagName.toLowerCase()} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1`);
}
return failures;
"#;

/// Journey 0: the login and register pages, as an anonymous visitor sees them, have no text
/// below the WCAG AA contrast (the register button in the header once had 3.2:1).
async fn text_is_readable_where_a_visitor_logs_in(b: &Browser, app: &TestApp) {
    for path in ["/login", "/register"] {
        b.step(&format!("j0-contrast{}", path.replace('/', "-")), async {
            b.goto(&app.url(path)).await?;
            let failures = b
                .driver
                .execute(LOW_CONTRAST_JS, Vec::new())
                .await?
                .convert::<Vec<String>>()?;
            ensure!(failures.is_empty(), "low contrast on {path}: {failures:?}");
            anyhow::Ok(())
        })
        .await;
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
            b.click_to("nav-products", "/products").await?;
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
        b.click_to("add-to-cart", "/cart").await?;
        b.wait_text("cart-count", "1").await?;
        b.el("guest-note").await?;
        let lines = b.cart_lines_shown().await?;
        ensure!(lines == [(first, 2)], "the guest cart shows {lines:?}");
        anyhow::Ok(())
    })
    .await;

    b.step("j1-checkout-asks-for-an-account", async {
        b.click_to("checkout", "/login").await?;
        b.el("login-form").await?;
        b.ensure_next("/cart").await?;
        anyhow::Ok(())
    })
    .await;

    b.step("j1-register-and-keep-the-cart", async {
        b.click_to("to-register", "/register").await?;
        b.ensure_next("/cart").await?;
        b.submit_credentials(&shopper.username, "register-submit")
            .await?;
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
pub(crate) struct Inspected {
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
            b.click_to("nav-session", "/session").await?;
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
        b.click_to("nav-session", "/session").await?;
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
    let before = b.step("j6-cart-before", b.cart_page_lines(app)).await;
    let other = OtherOrigin::serve(&app.url("/cart/add"), products[0]);

    b.step("j6-submit-from-other-origin", async {
        b.goto(&other.url).await?;
        b.click_to("other-origin-submit", "/cart/add").await?;
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
        let after = b.cart_page_lines(app).await?;
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
        .step("j4-cart-before-restart", b.cart_page_lines(&app))
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
            b.submit_credentials(&shopper.username, "login-submit")
                .await?;
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
        b.click_to("nav-orders", "/orders").await?;
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
        b.click_to("nav-cart", "/cart").await?;
        b.el("cart-empty").await?;
        ensure!(b.count("cart-line").await? == 0, "lines after checkout");
        b.click_to("nav-session", "/session").await?;
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
        b.click_to("logout", "/login").await?;
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

/// Journey 8: two browsers log in as one user; the first ends the second from /account with
/// its row's "Log out", and the second, on its next page, finds itself logged out and is told
/// why. On its own app; the cookie backend runs with `cookie_revocation`, the only way it can
/// end one session.
async fn one_browser_logs_the_other_out_from_the_account_page(
    b: &Browser,
    chromedriver: &Chromedriver,
    variant: Variant,
    artifacts: &Path,
) {
    let app = common::spawn_app_with(variant, |s| {
        s.cookie_revocation = s.session_backend == SessionBackend::Cookie;
    })
    .await;
    let username = format!("pair_{}", name(variant));
    let other = Browser::open(chromedriver, format!("{}-second", name(variant)), artifacts).await;
    let journey = async {
        b.step("j8-two-browsers-log-in", async {
            b.register(&app, &username).await?;
            other.goto(&app.url("/login?next=%2Faccount")).await?;
            other.submit_credentials(&username, "login-submit").await?;
            other.wait_path("/account").await?;
            b.goto(&app.url("/account")).await?;
            let rows = b.count("session-row").await?;
            ensure!(rows == 2, "the account page lists {rows} sessions");
            let devices = b.all("device").await?;
            for device in devices {
                let label = device.text().await?;
                ensure!(label == "Chrome on Linux", "a row is labelled {label:?}");
            }
            anyhow::Ok(())
        })
        .await;

        b.step("j8-log-the-other-out", async {
            let buttons = b.all("revoke-one").await?;
            ensure!(buttons.len() == 1, "{} Log out buttons", buttons.len());
            b.click_for_new_page(&buttons[0]).await?;
            b.wait_path("/account").await?;
            let flash = b.text("flash").await?;
            ensure!(
                flash.starts_with("Logged out Chrome on Linux"),
                "after Log out: {flash:?}"
            );
            let rows = b.count("session-row").await?;
            ensure!(rows == 1, "{rows} sessions left");
            b.el("current-session").await?;
            anyhow::Ok(())
        })
        .await;

        other
            .step("j8-the-other-is-logged-out", async {
                other.goto(&app.url("/account")).await?;
                other.wait_path("/login").await?;
                other.el("login-form").await?;
                ensure!(
                    other.count("nav-user").await? == 0,
                    "the header still names a user"
                );
                let flash = other.text("flash").await?;
                ensure!(
                    flash.starts_with("Your session has ended"),
                    "the login page says {flash:?}"
                );
                anyhow::Ok(())
            })
            .await;

        b.step("j8-the-first-goes-on", async {
            b.goto(&app.url("/account")).await?;
            b.wait_path("/account").await?;
            let user = b.text("nav-user").await?;
            ensure!(user == username, "the header names {user:?}");
            anyhow::Ok(())
        })
        .await;
    };
    let outcome = AssertUnwindSafe(journey).catch_unwind().await;
    other.quit().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Journey 7: live cart updates are a lease. On its own app with a short lease
/// (`LEASE_SECS`), a stock change made outside the browser reaches the open cart page without a
/// reload; when the lease ends the page says so and polls every `POLL_SECS` (and holds no
/// lease on the server), a price change still arrives by polling, and "Resume live updates"
/// asks for a new lease.
async fn live_cart_updates_for_a_lease_then_polling(b: &Browser, variant: Variant) {
    let app = common::spawn_app_with(variant, |s| {
        s.live_lease = std::time::Duration::from_secs(LEASE_SECS);
        s.poll_interval = std::time::Duration::from_secs(POLL_SECS);
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
