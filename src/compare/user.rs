//! The scripted user: a cookie-keeping HTTP client that registers, fills a cart and reads
//! `/session.json`, the way a browser would (it never follows redirects, so every step is seen).

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, bail, ensure};
use reqwest::{
    StatusCode,
    cookie::{CookieStore as _, Jar},
    header::{self, HeaderMap, HeaderValue},
};
use serde::Deserialize;

use crate::{sandbox::Instance, session::COOKIE_NAME};

/// The password every scripted account uses.
pub(super) const PASSWORD: &str = "compare: correct horse battery";
/// A request that takes longer is a failure, so no step can hang a run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What `/session.json` says (the fields the experiments read).
#[derive(Debug, Clone, Deserialize)]
pub struct SessionView {
    /// The logged-in user, if any.
    pub user: Option<String>,
    /// Bytes of the session cookie the request carried.
    pub cookie_bytes: usize,
    /// Bytes the server keeps for the session.
    pub server_bytes: usize,
    /// The cart lines.
    pub cart: Vec<CartLine>,
}

/// One cart line of `/session.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CartLine {
    /// Product id.
    pub product_id: i64,
    /// Units.
    pub quantity: u32,
}

/// One product of `/products.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProductView {
    /// Product id.
    pub id: i64,
    /// Units left.
    pub stock: i64,
}

/// A browser: one cookie jar, shared by every instance on 127.0.0.1 (cookies ignore ports,
/// which is exactly what makes two instances behind one name look like one site).
pub struct Browser {
    client: reqwest::Client,
    jar: Option<Arc<Jar>>,
}

impl Browser {
    /// A fresh browser with an empty cookie jar.
    pub fn new() -> anyhow::Result<Self> {
        let jar = Arc::new(Jar::default());
        let client = base_client()
            .cookie_provider(Arc::clone(&jar))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            jar: Some(jar),
        })
    }

    /// A browser that sends exactly this session cookie value on every request and keeps no
    /// jar: a replayed cookie, or the shared login of the load generator.
    pub fn with_cookie(value: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: client_with_cookie(value, 1)?,
            jar: None,
        })
    }

    /// The session cookie value this browser holds for `instance`.
    pub fn cookie(&self, instance: &Instance) -> anyhow::Result<String> {
        let jar = self
            .jar
            .as_ref()
            .context("this browser replays a fixed cookie")?;
        let url = instance
            .base()
            .parse()
            .context("parsing the instance URL")?;
        let header = jar.cookies(&url).context("no cookie for the instance")?;
        header
            .to_str()
            .ok()
            .and_then(|h| {
                h.split("; ")
                    .find_map(|c| c.strip_prefix(COOKIE_NAME)?.strip_prefix('='))
            })
            .map(str::to_owned)
            .context("no session cookie in the jar")
    }

    async fn post(
        &self,
        instance: &Instance,
        path: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<StatusCode> {
        let res = self
            .client
            .post(instance.url(path))
            .form(form)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = res.status();
        // Read the body so the connection goes back to the pool.
        let _ = res.bytes().await;
        Ok(status)
    }

    /// Registers `username` (and is then logged in).
    pub async fn register(&self, instance: &Instance, username: &str) -> anyhow::Result<()> {
        let status = self
            .post(
                instance,
                "/register",
                &[("username", username), ("password", PASSWORD)],
            )
            .await?;
        ensure!(
            status == StatusCode::SEE_OTHER,
            "POST /register answered {status}, expected 303"
        );
        Ok(())
    }

    /// Logs in as `username`, an account that exists.
    pub async fn login(&self, instance: &Instance, username: &str) -> anyhow::Result<()> {
        let status = self
            .post(
                instance,
                "/login",
                &[("username", username), ("password", PASSWORD)],
            )
            .await?;
        ensure!(
            status == StatusCode::SEE_OTHER,
            "POST /login answered {status}, expected 303"
        );
        Ok(())
    }

    /// The "Log out" handles /account shows (one per other session), and how many sessions it
    /// lists; none where the backend cannot list them.
    pub async fn account_handles(
        &self,
        instance: &Instance,
    ) -> anyhow::Result<(usize, Vec<String>)> {
        let res = self
            .client
            .get(instance.url("/account"))
            .send()
            .await
            .context("GET /account")?;
        ensure!(
            res.status() == StatusCode::OK,
            "GET /account answered {}, expected 200",
            res.status()
        );
        let page = res.text().await.context("reading /account")?;
        let listed = page.matches(r#"data-test="session-row""#).count();
        let handles = page
            .split(r#"name="session" value=""#)
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect();
        Ok((listed, handles))
    }

    /// Posts the "Log out" of one session (by its handle from /account); returns the status.
    pub async fn revoke(&self, instance: &Instance, handle: &str) -> anyhow::Result<StatusCode> {
        self.post(instance, "/account/sessions/revoke", &[("session", handle)])
            .await
    }

    /// Logs out.
    pub async fn logout(&self, instance: &Instance) -> anyhow::Result<()> {
        let status = self.post(instance, "/logout", &[]).await?;
        ensure!(
            status == StatusCode::SEE_OTHER,
            "POST /logout answered {status}, expected 303"
        );
        Ok(())
    }

    /// Adds `quantity` of a product; returns the status (303 when added).
    pub async fn add(
        &self,
        instance: &Instance,
        product_id: i64,
        quantity: u32,
    ) -> anyhow::Result<StatusCode> {
        let id = product_id.to_string();
        let quantity = quantity.to_string();
        self.post(
            instance,
            "/cart/add",
            &[("product_id", &id), ("quantity", &quantity)],
        )
        .await
    }

    /// Adds one unit of each of the first `lines` seed products (ids 1, 2, ...).
    pub async fn fill_cart(&self, instance: &Instance, lines: i64) -> anyhow::Result<()> {
        for id in 1..=lines {
            let status = self.add(instance, id, 1).await?;
            ensure!(
                status == StatusCode::SEE_OTHER,
                "POST /cart/add (product {id}) answered {status}, expected 303"
            );
        }
        Ok(())
    }

    /// `GET /session.json`.
    pub async fn session(&self, instance: &Instance) -> anyhow::Result<SessionView> {
        self.get_json(instance, "/session.json").await
    }

    /// `GET /products.json`.
    pub async fn products(&self, instance: &Instance) -> anyhow::Result<Vec<ProductView>> {
        self.get_json(instance, "/products.json").await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        instance: &Instance,
        path: &str,
    ) -> anyhow::Result<T> {
        let res = self
            .client
            .get(instance.url(path))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        if res.status() != StatusCode::OK {
            bail!("GET {path} answered {}, expected 200", res.status());
        }
        res.json()
            .await
            .with_context(|| format!("reading GET {path} as JSON"))
    }
}

pub(super) fn base_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
}

/// A client that sends `statecart=<value>` on every request, keeping up to `connections`
/// idle connections for reuse.
pub fn client_with_cookie(value: &str, connections: usize) -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("{COOKIE_NAME}={value}"))
            .context("the session cookie is not a valid header value")?,
    );
    base_client()
        .default_headers(headers)
        .pool_max_idle_per_host(connections)
        .build()
        .context("building the HTTP client")
}

/// One `POST /cart/add` of one unit with exactly this session cookie: the status and the
/// session cookie the answer sets, if any (what a browser would keep).
pub async fn add_with_cookie(
    instance: &Instance,
    cookie: &str,
    product_id: i64,
) -> anyhow::Result<(StatusCode, Option<String>)> {
    let res = client_with_cookie(cookie, 1)?
        .post(instance.url("/cart/add"))
        .form(&[
            ("product_id", product_id.to_string()),
            ("quantity", "1".to_owned()),
        ])
        .send()
        .await
        .context("POST /cart/add")?;
    let status = res.status();
    let set = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| {
            c.split(';')
                .next()?
                .strip_prefix(COOKIE_NAME)?
                .strip_prefix('=')
        })
        .find(|v| !v.is_empty())
        .map(str::to_owned);
    let _ = res.bytes().await;
    Ok((status, set))
}

/// A client without cookies, for the stateless pages.
pub fn anonymous_client(connections: usize) -> anyhow::Result<reqwest::Client> {
    base_client()
        .pool_max_idle_per_host(connections)
        .build()
        .context("building the HTTP client")
}
