//! The browser driver of the journeys: our own chromedriver, one Chromium profile per backend,
//! and the few WebDriver moves the journeys are written in (by `data-test` names), with a
//! screenshot and the page source kept when a step fails.

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

use super::{
    Inspected,
    common::{PASSWORD, TestApp, Variant, services::in_ci},
};
use anyhow::{Context as _, Result, bail, ensure};
use futures_util::FutureExt as _;
use tempfile::TempDir;
use thirtyfour::{extensions::query::ElementPollerWithTimeout, prelude::*};

/// Debian's Chromium; `STATECART_TEST_CHROMIUM` names another.
pub(crate) const CHROMIUM: (&str, &str) = ("STATECART_TEST_CHROMIUM", "/usr/bin/chromium");
/// Debian's chromedriver (package chromium-driver); `STATECART_TEST_CHROMEDRIVER` names another.
pub(crate) const CHROMEDRIVER: (&str, &str) =
    ("STATECART_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");

/// The program `(env var, default path)` names.
pub(crate) fn program((var, default): (&str, &str)) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Headless, and quiet: no GPU, no sandbox (containers), no background traffic to Google.
pub(crate) const CHROMIUM_ARGS: &[&str] = &[
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
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How often a wait looks again.
pub(crate) const POLL: Duration = Duration::from_millis(50);
/// A CSS selector for a `data-test` name.
pub(crate) fn sel(test: &str) -> String {
    format!("[data-test=\"{test}\"]")
}

/// Cents from money as the shop shows it (`$1,234.50`).
pub(crate) fn cents(text: &str) -> Result<i64> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    ensure!(
        text.starts_with('$') && digits.len() >= 3,
        "not an amount: {text:?}"
    );
    Ok(digits.parse()?)
}

/// The lowercase variant name, for messages and artifact files.
pub(crate) fn name(variant: Variant) -> String {
    format!("{variant:?}").to_lowercase()
}

/// Writes past the test harness's capture, so a plain `cargo test` shows it.
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The message of a panic payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Our own chromedriver on a free port; killed when dropped, also when a journey panics.
pub(crate) struct Chromedriver {
    pub(crate) url: String,
    pub(crate) artifacts: PathBuf,
    pub(crate) child: Child,
    // Chromedriver and Chromium want a writable HOME; removed after the child is killed.
    pub(crate) _home: TempDir,
}

impl Chromedriver {
    /// Starts chromedriver, or says why the suite is skipped (and fails instead on CI).
    pub(crate) async fn start_or_skip() -> Option<Self> {
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

    pub(crate) async fn start(artifacts: &Path) -> Result<Self> {
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

    pub(crate) async fn wait_ready(&mut self) -> Result<()> {
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
pub(crate) fn artifacts_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target dir");
    let dir = target.join("e2e-artifacts");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create target/e2e-artifacts");
    dir
}

/// One WebDriver session in a fresh Chromium profile, named after its backend.
pub(crate) struct Browser {
    pub(crate) driver: WebDriver,
    pub(crate) label: String,
    pub(crate) artifacts: PathBuf,
    // Declared after the driver, so the session ends before its profile is removed.
    pub(crate) _profile: TempDir,
}

impl Browser {
    pub(crate) async fn open(chromedriver: &Chromedriver, label: String, artifacts: &Path) -> Self {
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
    pub(crate) async fn quit(self) {
        let Self {
            driver, _profile, ..
        } = self;
        if let Err(err) = driver.quit().await {
            say(&format!("closing the browser failed: {err}"));
        }
    }

    /// Runs one journey step. If it fails (an error or a failed assertion), saves a screenshot
    /// and the page source first, then fails the test naming them.
    pub(crate) async fn step<T>(&self, step: &str, body: impl Future<Output = Result<T>>) -> T {
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
    pub(crate) async fn capture(&self, step: &str) -> String {
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

    pub(crate) async fn goto(&self, url: &str) -> Result<()> {
        self.driver
            .goto(url)
            .await
            .with_context(|| format!("open {url}"))
    }

    /// The path of the page shown.
    pub(crate) async fn path(&self) -> Result<String> {
        Ok(self.driver.current_url().await?.path().to_owned())
    }

    /// A query parameter of the page shown.
    pub(crate) async fn query_param(&self, key: &str) -> Result<Option<String>> {
        let url = self.driver.current_url().await?;
        Ok(url
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned()))
    }

    /// Waits, boundedly, until `check` says yes; its errors count as "not yet".
    pub(crate) async fn wait_until(
        &self,
        what: &str,
        check: impl AsyncFnMut() -> Result<bool>,
    ) -> Result<()> {
        self.wait_within(what, WAIT, check).await
    }

    /// Waits until `check` says yes, for at most `within`; its errors count as "not yet".
    pub(crate) async fn wait_within(
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
    pub(crate) async fn keeps(
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
    pub(crate) async fn wait_path(&self, path: &str) -> Result<()> {
        let mut seen = String::new();
        self.wait_until(&format!("the page {path}"), async || {
            seen = self.path().await?;
            Ok(seen == path)
        })
        .await
        .with_context(|| format!("the browser shows {seen}"))
    }

    /// Waits until the `data-test` element's text is `text`.
    pub(crate) async fn wait_text(&self, test: &str, text: &str) -> Result<()> {
        let mut seen = String::new();
        self.wait_until(&format!("{test} to read {text:?}"), async || {
            seen = self.find_text(&sel(test)).await?;
            Ok(seen == text)
        })
        .await
        .with_context(|| format!("{test} reads {seen:?}"))
    }

    /// The first element matching `css`, waiting for it.
    pub(crate) async fn find(&self, css: &str) -> Result<WebElement> {
        self.driver
            .query(By::Css(css))
            .first()
            .await
            .with_context(|| format!("no element {css}"))
    }

    pub(crate) async fn find_text(&self, css: &str) -> Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    /// The `data-test` element, waiting for it.
    pub(crate) async fn el(&self, test: &str) -> Result<WebElement> {
        self.find(&sel(test)).await
    }

    pub(crate) async fn text(&self, test: &str) -> Result<String> {
        self.find_text(&sel(test)).await
    }

    pub(crate) async fn click(&self, test: &str) -> Result<()> {
        self.el(test)
            .await?
            .click()
            .await
            .with_context(|| format!("click {test}"))
    }

    /// Clicks the `data-test` element and waits for the page at `path`.
    pub(crate) async fn click_to(&self, test: &str, path: &str) -> Result<()> {
        self.click(test).await?;
        self.wait_path(path).await
    }

    /// Fills in the username and the test password of the login or register form shown, and
    /// sends it with its `submit` button.
    pub(crate) async fn submit_credentials(&self, username: &str, submit: &str) -> Result<()> {
        self.type_into("username", username).await?;
        self.type_into("password", PASSWORD).await?;
        self.click(submit).await
    }

    /// Checks that the page shown carries `next` (where to go after logging in) as `expected`.
    pub(crate) async fn ensure_next(&self, expected: &str) -> Result<()> {
        let next = self.query_param("next").await?;
        ensure!(
            next.as_deref() == Some(expected),
            "{} carries next={next:?}, expected {expected}",
            self.path().await?
        );
        Ok(())
    }

    /// Opens the cart page and reads its lines.
    pub(crate) async fn cart_page_lines(&self, app: &TestApp) -> Result<Vec<(i64, u32)>> {
        self.goto(&app.url("/cart")).await?;
        self.el("cart-lines").await?;
        self.cart_lines_shown().await
    }

    /// Clicks a button that reloads the page it is on, and waits for the new page: the old one
    /// may already show what the new one should (a typed quantity), so mark it first.
    pub(crate) async fn click_for_new_page(&self, button: &WebElement) -> Result<()> {
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
    pub(crate) async fn all(&self, test: &str) -> Result<Vec<WebElement>> {
        Ok(self.driver.find_all(By::Css(sel(test))).await?)
    }

    pub(crate) async fn count(&self, test: &str) -> Result<usize> {
        Ok(self.all(test).await?.len())
    }

    pub(crate) async fn type_into(&self, test: &str, text: &str) -> Result<()> {
        let input = self.el(test).await?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    /// Replaces an input's value and checks the page took it.
    pub(crate) async fn set_value(&self, test: &str, value: &str) -> Result<()> {
        self.type_into(test, value).await?;
        let now = self.el(test).await?.value().await?;
        ensure!(now.as_deref() == Some(value), "{test} holds {now:?}");
        Ok(())
    }

    /// Registers `username` from the register page; the browser is then logged in.
    pub(crate) async fn register(&self, app: &TestApp, username: &str) -> Result<()> {
        self.goto(&app.url("/register")).await?;
        self.submit_credentials(username, "register-submit").await?;
        self.wait_until("the page after registering", async || {
            Ok(self.path().await? != "/register")
        })
        .await
    }

    /// The cart's live-update status: its `data-state` and what it reads.
    pub(crate) async fn live_status(&self) -> Result<(String, String)> {
        let status = self.el("live-status").await?;
        let state = status.attr("data-state").await?.unwrap_or_default();
        Ok((state, status.text().await?))
    }

    /// Waits, for at most `within`, until the live-update status is in `state`; returns what
    /// it reads then.
    pub(crate) async fn wait_live_state(&self, state: &str, within: Duration) -> Result<String> {
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
    pub(crate) async fn ensure_same_page(&self) -> Result<()> {
        let same = self
            .driver
            .execute("return window.statecartSamePage === true;", Vec::new())
            .await?
            .convert::<bool>()?;
        ensure!(same, "the page was reloaded");
        Ok(())
    }

    /// Adds `quantity` of a product from its page, and waits for the cart page that follows.
    pub(crate) async fn add_from_product_page(
        &self,
        app: &TestApp,
        id: i64,
        quantity: u32,
    ) -> Result<()> {
        self.goto(&app.url(&format!("/products/{id}"))).await?;
        self.set_value("add-quantity", &quantity.to_string())
            .await?;
        self.click_to("add-to-cart", "/cart").await
    }

    /// The cart as the page shows it: `(product id, quantity)` per line.
    pub(crate) async fn cart_lines_shown(&self) -> Result<Vec<(i64, u32)>> {
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
    pub(crate) async fn totals_add_up(&self) -> Result<()> {
        let mut sum = 0;
        for line_total in self.all("line-total").await? {
            sum += cents(&line_total.text().await?)?;
        }
        let total = cents(&self.text("cart-total").await?)?;
        ensure!(total == sum, "cart total {total}, lines add up to {sum}");
        Ok(())
    }

    /// The inspector's numbers on the `/session` page shown.
    pub(crate) async fn inspected(&self) -> Result<Inspected> {
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
pub(crate) struct OtherOrigin {
    pub(crate) url: String,
    pub(crate) handle: actix_web::dev::ServerHandle,
}

impl OtherOrigin {
    /// Serves the form on a free port of 127.0.0.1 (same host, other port: another origin).
    pub(crate) fn serve(action: &str, product_id: i64) -> Self {
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

    pub(crate) async fn stop(self) {
        self.handle.stop(false).await;
    }
}
