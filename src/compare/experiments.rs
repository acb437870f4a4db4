//! Experiments 1 to 6, 8 and 10: a scripted user against real instances, observing what each
//! backend keeps through a restart, a crash, a second instance, a logout and idleness, what its
//! session weighs as the cart grows, what it keeps of changes sent at the same moment, and
//! whether one browser can end another's session of the same user.

use std::{path::Path, time::Instant};

use anyhow::{Context as _, ensure};
use futures_util::{StreamExt as _, stream::FuturesUnordered};
use reqwest::StatusCode;

use super::{
    FOOTPRINT_STEPS,
    report::{
        Expiry, Footprint, FootprintPoint, Guests, ParallelWrites, Probe, Replay, RevokeOne, Seen,
    },
    target::Sandbox,
    user::{self, Browser, SessionView},
};
use crate::{
    config::MAX_CART_LINES,
    db::Db,
    domain::catalog,
    sandbox::{Instance, Signal},
};

/// Lines of the cart in the restart, crash and two-instance experiments.
const CART_LINES: i64 = 3;
/// The idle timeout of the expiry experiment, and how long the user then stays idle.
pub const EXPIRY_IDLE_TIMEOUT_SECS: u64 = 2;
const EXPIRY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// Most lines the footprint probe tries; the cookie backend refuses near 300 (README).
pub const PROBE_CAP: usize = 400;
/// Stock of each product added for the footprint run.
const FILLER_STOCK: i64 = 100;

/// 1 and 2: a 3-line cart, `signal`, the same config started again: what is left?
pub async fn survive(binary: &Path, sandbox: &Sandbox, signal: Signal) -> anyhow::Result<Seen> {
    let browser = Browser::new()?;
    let first = sandbox.start(binary, "first", &[]).await?;
    browser.register(&first, "ada").await?;
    browser.fill_cart(&first, CART_LINES).await?;
    let before = browser.session(&first).await?;
    ensure!(
        before.user.is_some() && before.cart.len() == usize::try_from(CART_LINES)?,
        "before the {signal} the user was not logged in with {CART_LINES} cart lines"
    );
    first.stop(signal).await?;
    let again = sandbox.start(binary, "again", &[]).await?;
    let after = browser.session(&again).await?;
    again.stop(Signal::Term).await?;
    Ok(seen("ada", &before, &after))
}

/// 3: two instances sharing the config; log in and fill the cart on one, read on the other.
pub async fn two_instances(binary: &Path, sandbox: &Sandbox) -> anyhow::Result<Seen> {
    let browser = Browser::new()?;
    let a = sandbox.start(binary, "a", &[]).await?;
    let b = sandbox.start(binary, "b", &[]).await?;
    browser.register(&a, "grace").await?;
    browser.fill_cart(&a, CART_LINES).await?;
    let before = browser.session(&a).await?;
    ensure!(
        before.user.is_some(),
        "the user was not logged in on the first instance"
    );
    let on_b = browser.session(&b).await?;
    a.stop(Signal::Term).await?;
    b.stop(Signal::Term).await?;
    Ok(seen("grace", &before, &on_b))
}

/// How `user`'s session `after` compares with the same session `before`.
fn seen(user: &str, before: &SessionView, after: &SessionView) -> Seen {
    Seen {
        logged_in: after.user.as_deref() == Some(user),
        cart_lines: after.cart.len(),
        cart_lines_before: before.cart.len(),
        cart_intact: after.cart == before.cart,
    }
}

/// 4: save the cookie, log out, send the saved cookie again.
pub async fn logout_replay(binary: &Path, sandbox: &Sandbox) -> anyhow::Result<Replay> {
    let browser = Browser::new()?;
    let one = sandbox.start(binary, "one", &[]).await?;
    browser.register(&one, "linus").await?;
    browser.fill_cart(&one, 1).await?;
    let saved = browser.cookie(&one)?;
    browser.logout(&one).await?;
    let logged_out = browser.session(&one).await?.user.is_none();
    let replayed = Browser::with_cookie(&saved)?.session(&one).await?;
    one.stop(Signal::Term).await?;
    Ok(Replay {
        logged_out,
        accepted: replayed.user.is_some(),
    })
}

/// 10: two browsers log in as one user; the first ends the second from /account.
pub async fn revoke_one(binary: &Path, sandbox: &Sandbox) -> anyhow::Result<RevokeOne> {
    let (first, second) = (Browser::new()?, Browser::new()?);
    let one = sandbox.start(binary, "one", &[]).await?;
    first.register(&one, "rosa").await?;
    second.login(&one, "rosa").await?;
    let (listed, handles) = first.account_handles(&one).await?;
    if let [handle] = handles.as_slice() {
        let status = first.revoke(&one, handle).await?;
        ensure!(
            status == StatusCode::SEE_OTHER,
            "POST /account/sessions/revoke answered {status}, expected 303"
        );
    } else {
        ensure!(
            handles.is_empty(),
            "/account offers {} Log out buttons for one other session",
            handles.len()
        );
    }
    let ended = second.session(&one).await?.user.is_none();
    let first_kept = first.session(&one).await?.user.is_some();
    one.stop(Signal::Term).await?;
    Ok(RevokeOne {
        listed,
        ended,
        first_kept,
    })
}

/// 5: soft state. Log in with a 2-second idle timeout, stay idle 3 seconds, look again.
pub async fn expiry(binary: &Path, sandbox: &Sandbox) -> anyhow::Result<Expiry> {
    let browser = Browser::new()?;
    let settings = [("idle_timeout_secs", EXPIRY_IDLE_TIMEOUT_SECS.to_string())];
    let one = sandbox.start(binary, "one", &settings).await?;
    browser.register(&one, "barbara").await?;
    let before = browser.session(&one).await?;
    let idle_from = Instant::now();
    tokio::time::sleep(EXPIRY_WAIT).await;
    let idle_secs = idle_from.elapsed().as_secs_f64();
    let after = browser.session(&one).await?;
    one.stop(Signal::Term).await?;
    Ok(Expiry {
        idle_timeout_secs: EXPIRY_IDLE_TIMEOUT_SECS,
        idle_secs,
        logged_in_before: before.user.is_some(),
        ended: after.user.is_none(),
    })
}

/// 6: one line more at a time, reading the cookie and server bytes at each step of
/// [`FOOTPRINT_STEPS`], at `cart_max_lines` and every 50 lines, until the server refuses a
/// line or [`PROBE_CAP`] lines are in. `cart_max_lines` is raised to the most the config
/// allows for this run, so only the cookie limit can refuse.
pub async fn footprint(
    binary: &Path,
    sandbox: &Sandbox,
    cart_max_lines: usize,
) -> anyhow::Result<Footprint> {
    let cap = PROBE_CAP.max(cart_max_lines).min(MAX_CART_LINES);
    prepare_catalog(&sandbox.database_url, cap, None).await?;
    let browser = Browser::new()?;
    let settings = [("cart_max_lines", MAX_CART_LINES.to_string())];
    let one = sandbox.start(binary, "one", &settings).await?;
    browser.register(&one, "margaret").await?;
    let mut ids: Vec<i64> = browser
        .products(&one)
        .await?
        .into_iter()
        .filter(|p| p.stock > 0)
        .map(|p| p.id)
        .collect();
    ids.sort_unstable();
    ensure!(
        ids.len() >= cap,
        "the catalog has {} products in stock, {cap} needed",
        ids.len()
    );

    let mut points = Vec::new();
    let mut accepted = 0;
    let mut refusal = None;
    for (n, id) in (1..=cap).zip(ids) {
        let status = browser.add(&one, id, 1).await?;
        if status != StatusCode::SEE_OTHER {
            ensure!(
                status.is_client_error(),
                "POST /cart/add of line {n} answered {status}"
            );
            refusal = Some((n, status.as_u16()));
            break;
        }
        accepted = n;
        if FOOTPRINT_STEPS.contains(&n) || n == cart_max_lines || n % 50 == 0 || n == cap {
            points.push(measure(&browser, &one, n).await?);
        }
    }
    // The last line that fit, for the chart's end point.
    if points.last().is_none_or(|p| p.lines != accepted) && accepted > 0 {
        points.push(measure(&browser, &one, accepted).await?);
    }
    one.stop(Signal::Term).await?;
    Ok(Footprint {
        quantity_per_line: 1,
        points,
        probe: Probe {
            cap,
            accepted_lines: accepted,
            refused_at: refusal.map(|(n, _)| n),
            refusal_status: refusal.map(|(_, s)| s),
        },
    })
}

/// Rounds of the parallel-writes experiment.
pub const PARALLEL_ROUNDS: usize = 5;

/// 8: `parallel` adds of different products sent at once with one cookie, for
/// [`PARALLEL_ROUNDS`] rounds; after each round the browser keeps the session cookie of the
/// answer that arrived last, as a browser does. Then: how many acknowledged adds are in the
/// cart?
pub async fn parallel_writes(
    binary: &Path,
    sandbox: &Sandbox,
    parallel: usize,
) -> anyhow::Result<ParallelWrites> {
    let stock = i64::try_from(PARALLEL_ROUNDS)?;
    prepare_catalog(&sandbox.database_url, parallel, Some(stock)).await?;
    let browser = Browser::new()?;
    let one = sandbox.start(binary, "one", &[]).await?;
    browser.register(&one, "ada").await?;
    let ids = stocked_products(&browser, &one, stock, parallel).await?;
    let mut cookie = browser.cookie(&one)?;
    let mut acknowledged = 0;
    for _ in 0..PARALLEL_ROUNDS {
        let mut sends: FuturesUnordered<_> = ids
            .iter()
            .map(|&id| user::add_with_cookie(&one, &cookie, id))
            .collect();
        let mut last_cookie = None;
        while let Some(answer) = sends.next().await {
            let (status, set) = answer?;
            ensure!(
                status == StatusCode::SEE_OTHER || status == StatusCode::SERVICE_UNAVAILABLE,
                "a parallel POST /cart/add answered {status}"
            );
            if status == StatusCode::SEE_OTHER {
                acknowledged += 1;
            }
            last_cookie = set.or(last_cookie);
        }
        drop(sends);
        if let Some(set) = last_cookie {
            cookie = set;
        }
    }
    let seen = Browser::with_cookie(&cookie)?.session(&one).await?;
    one.stop(Signal::Term).await?;
    ensure!(seen.user.is_some(), "the user was logged out by the run");
    let kept: usize = seen
        .cart
        .iter()
        .map(|l| usize::try_from(l.quantity).unwrap_or(usize::MAX))
        .sum();
    Ok(ParallelWrites {
        parallel,
        rounds: PARALLEL_ROUNDS,
        acknowledged,
        kept,
        lost: acknowledged.saturating_sub(kept),
    })
}

/// Cart lines of every guest in the guests experiment.
pub const GUEST_LINES: usize = 3;
/// Guests looked at again after the restart.
const GUEST_SAMPLE: usize = 20;
/// New guests one address tries to start in the guests experiment's flood.
pub const GUEST_FLOOD: usize = 100;
/// The per-address guest limit the flood meets (the setting's default).
const GUEST_FLOOD_LIMIT: &str = "30";

/// 9: `count` anonymous visitors each put [`GUEST_LINES`] products in a cart (no account).
/// What do they cost the browser and the server, and what does a restart leave of them?
pub async fn guests(binary: &Path, sandbox: &Sandbox, count: usize) -> anyhow::Result<Guests> {
    let stock = i64::try_from(count)?;
    prepare_catalog(&sandbox.database_url, GUEST_LINES, Some(stock)).await?;
    let first = sandbox.start(binary, "first", &[]).await?;
    let ids = stocked_products(&Browser::new()?, &first, stock, GUEST_LINES).await?;
    let rss_before = first.rss_bytes();
    let mut cookies = Vec::with_capacity(count);
    for n in 0..count {
        let guest = Browser::new()?;
        for &id in &ids {
            let status = guest.add(&first, id, 1).await?;
            ensure!(
                status == StatusCode::SEE_OTHER,
                "guest {n}: POST /cart/add answered {status}"
            );
        }
        cookies.push(guest.cookie(&first)?);
    }
    let rss_growth = first
        .rss_bytes()
        .zip(rss_before)
        .map(|(after, before)| after.saturating_sub(before));
    let seen = Browser::with_cookie(&cookies[0])?.session(&first).await?;
    ensure!(
        seen.user.is_none() && seen.cart.len() == GUEST_LINES,
        "a guest's /session.json shows {:?} with {} lines",
        seen.user,
        seen.cart.len()
    );
    first.stop(Signal::Term).await?;
    let again = sandbox.start(binary, "again", &[]).await?;
    let sample: Vec<&String> = cookies
        .iter()
        .step_by((count / GUEST_SAMPLE).max(1))
        .collect();
    let mut kept = 0;
    for cookie in &sample {
        if Browser::with_cookie(cookie)?
            .session(&again)
            .await?
            .cart
            .len()
            == GUEST_LINES
        {
            kept += 1;
        }
    }
    again.stop(Signal::Term).await?;
    let flood_refused = guest_flood(binary, sandbox, ids[0]).await?;
    let cookie_bytes = cookies
        .iter()
        .map(|c| crate::session::COOKIE_NAME.len() + 1 + c.len())
        .sum::<usize>()
        / count.max(1);
    Ok(Guests {
        guests: count,
        lines_each: GUEST_LINES,
        cookie_bytes,
        server_bytes_each: seen.server_bytes,
        rss_growth_bytes: rss_growth,
        sampled_after_restart: sample.len(),
        kept_after_restart: kept,
        flood_sent: GUEST_FLOOD,
        flood_refused,
    })
}

/// [`GUEST_FLOOD`] anonymous adds from one address, none keeping its cookie, against an
/// instance with the default guest limit: how many were refused (429). A backend that keeps
/// no server state has nothing to bound and refuses none.
async fn guest_flood(binary: &Path, sandbox: &Sandbox, product: i64) -> anyhow::Result<usize> {
    let limit = [("guest_sessions_per_minute", GUEST_FLOOD_LIMIT.to_owned())];
    let flooded = sandbox.start(binary, "flooded", &limit).await?;
    let mut refused = 0;
    for n in 0..GUEST_FLOOD {
        match Browser::new()?.add(&flooded, product, 1).await? {
            StatusCode::SEE_OTHER => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => anyhow::bail!("flood guest {n}: POST /cart/add answered {other}"),
        }
    }
    flooded.stop(Signal::Term).await?;
    Ok(refused)
}

async fn measure(
    browser: &Browser,
    instance: &Instance,
    lines: usize,
) -> anyhow::Result<FootprintPoint> {
    let seen = browser.session(instance).await?;
    ensure!(
        seen.cart.len() == lines,
        "expected {lines} cart lines, /session.json shows {}",
        seen.cart.len()
    );
    Ok(FootprintPoint {
        lines,
        cookie_bytes: seen.cookie_bytes,
        server_bytes: seen.server_bytes,
    })
}

/// `count` products the instance shows with at least `stock` units each.
async fn stocked_products(
    browser: &Browser,
    instance: &Instance,
    stock: i64,
    count: usize,
) -> anyhow::Result<Vec<i64>> {
    let ids: Vec<i64> = browser
        .products(instance)
        .await?
        .into_iter()
        .filter(|p| p.stock >= stock)
        .map(|p| p.id)
        .take(count)
        .collect();
    ensure!(
        ids.len() == count,
        "the catalog has {} products with {stock} units or more, {count} needed",
        ids.len()
    );
    Ok(ids)
}

/// Gives the sandbox's database a catalog of at least `products` products before the app first
/// starts on it: migrations and the usual seed first (as the app would), then plain filler;
/// with `stock`, every product gets at least that many units. One connection, one transaction.
pub(super) async fn prepare_catalog(
    database_url: &str,
    products: usize,
    stock: Option<i64>,
) -> anyhow::Result<()> {
    let db = Db::connect(database_url).await?;
    let result = async {
        db.migrate().await?;
        catalog::seed_if_new(&db)
            .await
            .context("seeding the catalog")?;
        let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
            .fetch_one(&db.pool)
            .await
            .context("counting products")?;
        let missing = i64::try_from(products)?.saturating_sub(have);
        let mut tx = db.pool.begin().await?;
        // New products are a catalog change like any other: running instances pick them up.
        let version = catalog::next_version(&mut tx).await?;
        for n in 1..=missing {
            sqlx::query(
                "INSERT INTO products (name, description, price_cents, stock, version) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(format!("Filler product {n}"))
            .bind("Added by statecart compare to measure large carts.")
            .bind(100_i64)
            .bind(FILLER_STOCK)
            .bind(version)
            .execute(&mut *tx)
            .await
            .context("adding a filler product")?;
        }
        if let Some(stock) = stock {
            sqlx::query("UPDATE products SET stock = $1, version = $2 WHERE stock < $1")
                .bind(stock)
                .bind(version)
                .execute(&mut *tx)
                .await
                .context("stocking the catalog")?;
        }
        tx.commit().await.context("preparing the catalog")?;
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    result
}
