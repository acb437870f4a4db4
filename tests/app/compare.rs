//! `statecart compare`: the real binary runs a short comparison (cookie, memory and SQLite
//! database backends, one second per speed scenario) and its typed report must say what the
//! backend table says. `/compare` serves the latest report, statelessly.

use crate::common;

use std::{path::PathBuf, process::Command, sync::OnceLock};

use common::{Variant, assert_no_set_cookie, spawn_app};
use reqwest::StatusCode;
use statecart::{
    compare::report::{BackendReport, Report, Routing},
    config::SessionBackend,
};

/// The backends of the shared run: those that need no outside service.
const BACKENDS: [SessionBackend; 3] = [
    SessionBackend::Cookie,
    SessionBackend::Memory,
    SessionBackend::Database,
];

/// One comparison run, shared by every test here (it takes about half a minute).
struct Run {
    report: Report,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

fn run() -> &'static Run {
    // A failed run is kept as its message, so every test reports it without running it again.
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    match RUN.get_or_init(compare) {
        Ok(run) => run,
        Err(why) => panic!("{why}"),
    }
}

fn compare() -> Result<Run, String> {
    compare_with(&["--backends", "cookie,memory,database"])
}

/// `statecart compare` with `args` on top of a short run's, in a temp dir of its own.
fn compare_with(args: &[&str]) -> Result<Run, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let out = dir.path().join("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_statecart"));
    for (key, _) in std::env::vars() {
        if key.starts_with("STATECART_") {
            cmd.env_remove(key);
        }
    }
    let output = cmd
        .arg("compare")
        .args(args)
        .args(["--duration", "1", "--guests", "40"])
        .arg("--out")
        .arg(&out)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .map_err(|e| format!("running statecart compare: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "compare failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let json = std::fs::read(out.join("report.json")).map_err(|e| format!("report.json: {e}"))?;
    let report: Report =
        serde_json::from_slice(&json).map_err(|e| format!("report.json does not parse: {e}"))?;
    Ok(Run {
        report,
        out,
        _dir: dir,
    })
}

fn backend(backend: SessionBackend) -> &'static BackendReport {
    run()
        .report
        .backends
        .iter()
        .find(|b| b.backend == backend)
        .unwrap_or_else(|| panic!("{backend} is in the report"))
}

#[test]
fn the_report_covers_the_backends_asked_for_in_order_with_nothing_skipped_or_failed() {
    let report = &run().report;
    let variants: Vec<_> = report.backends.iter().map(|b| b.variant.as_str()).collect();
    // The cookie backend runs twice: as shipped, then with cookie_revocation.
    assert_eq!(
        variants,
        ["cookie", "cookie+revocation", "memory", "sqlite"]
    );
    assert!(report.backends.iter().all(|b| b.skipped.is_none()));
    assert!(report.failures().is_empty(), "{:?}", report.failures());
}

#[test]
fn cookie_revocation_rejects_the_replay_and_keeps_everything_else_of_the_cookie_backend() {
    let revoking = run()
        .report
        .backends
        .iter()
        .find(|b| b.variant == "cookie+revocation")
        .expect("the cookie+revocation row");
    assert!(revoking.cookie_revocation);
    let replay = revoking.logout_replay.measured().expect("replay ran");
    assert!(replay.logged_out && !replay.accepted, "{replay:?}");
    for seen in [&revoking.restart, &revoking.crash, &revoking.instances] {
        assert!(seen.measured().expect("ran").kept(), "{seen:?}");
    }
    let table = run().report.to_text();
    let row = table
        .lines()
        .find(|l| l.starts_with("cookie+revocation"))
        .expect("a row in the table");
    assert!(row.contains("rejected") && !row.contains('!'), "{row}");
}

#[test]
fn memory_loses_the_session_on_restart_and_crash_while_cookie_and_database_keep_it() {
    for b in BACKENDS {
        let report = backend(b);
        let restart = report.restart.measured().expect("restart ran");
        let crash = report.crash.measured().expect("crash ran");
        let keeps = b != SessionBackend::Memory;
        assert_eq!(restart.kept(), keeps, "{b} after SIGTERM: {restart:?}");
        assert_eq!(crash.kept(), keeps, "{b} after SIGKILL: {crash:?}");
        if !keeps {
            assert!(!restart.logged_in && !crash.logged_in, "{b}");
        }
    }
}

#[test]
fn a_login_holds_on_a_second_instance_except_in_memory() {
    for b in BACKENDS {
        let seen = backend(b).instances.measured().expect("instances ran");
        assert_eq!(seen.kept(), b != SessionBackend::Memory, "{b}: {seen:?}");
    }
}

#[test]
fn a_cookie_saved_before_logout_replays_only_on_the_cookie_backend() {
    for b in BACKENDS {
        let replay = backend(b).logout_replay.measured().expect("replay ran");
        assert!(replay.logged_out, "{b}: the browser that logged out is out");
        assert_eq!(replay.accepted, b == SessionBackend::Cookie, "{b}");
    }
}

#[test]
fn every_backend_ends_a_session_left_idle_past_its_timeout() {
    for b in BACKENDS {
        let expiry = backend(b).expiry.measured().expect("expiry ran");
        assert!(expiry.logged_in_before, "{b}");
        assert!(expiry.ended, "{b}: {expiry:?}");
        assert!(
            expiry.idle_secs > 2.0,
            "{b}: idle past the 2-second timeout"
        );
    }
}

#[test]
fn cookie_bytes_grow_with_the_cart_and_the_cookie_backend_keeps_nothing_on_the_server() {
    let cookie = backend(SessionBackend::Cookie)
        .footprint
        .measured()
        .expect("footprint ran");
    let sizes: Vec<usize> = [1, 5, 10, 20, 50]
        .into_iter()
        .map(|n| cookie.at(n).map(|p| p.cookie_bytes).expect("measured"))
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    assert!(cookie.points.iter().all(|p| p.server_bytes == 0));
    // The probe finds where the 4096-byte browser limit stops the cart, and says so with 422.
    assert_eq!(cookie.probe.refusal_status, Some(422));
    let last = cookie.points.last().expect("points");
    assert!(last.cookie_bytes <= 4096, "{last:?}");
}

#[test]
fn server_side_backends_send_a_small_cookie_and_keep_the_cart_themselves() {
    for b in [SessionBackend::Memory, SessionBackend::Database] {
        let f = backend(b).footprint.measured().expect("footprint ran");
        let one = f.at(1).expect("1 line");
        let fifty = f.at(50).expect("50 lines");
        assert!(fifty.server_bytes > one.server_bytes, "{b}: {f:?}");
        assert!(
            fifty.cookie_bytes < 200,
            "{b}: the cookie is a key: {fifty:?}"
        );
        assert_eq!(f.probe.refused_at, None, "{b}: no cookie limit");
    }
}

#[test]
fn speed_is_measured_for_the_stateless_the_read_and_the_write_scenario() {
    for b in BACKENDS {
        let speed = backend(b).speed.measured().expect("speed ran");
        let names: Vec<_> = speed.scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["home", "cart_read", "cart_write"], "{b}");
        for s in &speed.scenarios {
            assert!(s.requests > 0, "{b} {}", s.name);
            assert_eq!(s.errors, 0, "{b} {}", s.name);
            assert!(s.p50_ms <= s.p99_ms, "{b} {}", s.name);
            // Linux says how much CPU the server spent; serving a request costs some.
            let cpu = s.cpu_us_per_request.expect("CPU measured from /proc");
            assert!(cpu > 0.0, "{b} {}: {cpu} us/request", s.name);
        }
    }
}

#[test]
fn parallel_writes_lose_nothing_server_side_and_the_cookie_row_shows_its_loss() {
    for b in BACKENDS {
        let p = backend(b)
            .parallel_writes
            .measured()
            .expect("parallel writes ran");
        assert_eq!(p.parallel, 12, "{b}: the default");
        assert!(p.acknowledged > 0, "{b}: {p:?}");
        if b == SessionBackend::Cookie {
            assert!(
                p.lost > 0,
                "{b}: each answer carries its own cookie, the last wins: {p:?}"
            );
        } else {
            assert_eq!(p.lost, 0, "{b}: every acknowledged add is kept: {p:?}");
            assert_eq!(p.kept, p.acknowledged, "{b}");
        }
    }
    let json = std::fs::read_to_string(run().out.join("report.json")).expect("report.json");
    assert!(json.contains("\"parallel_writes\""), "a field named for it");
    let table = run().report.to_text();
    assert!(table.contains("CPU us/req"), "{table}");
    assert!(table.contains("parallel writes"), "{table}");
    assert!(table.contains("lost 0 of"), "{table}");
}

#[test]
fn a_fleet_shows_what_each_backend_loses_when_instances_die_or_roll() {
    for b in BACKENDS {
        let fleet = backend(b).fleet.measured().expect("fleet ran");
        let part = |name: &str, routing: Routing| {
            fleet
                .parts
                .iter()
                .find(|p| p.part == name && p.routing == routing)
                .unwrap_or_else(|| panic!("{b}: no {name} ({routing:?}) in {fleet:?}"))
        };
        for p in &fleet.parts {
            assert_eq!(p.instances, 3, "{b}");
            assert!(p.requests > 0, "{b}: shoppers shopped: {p:?}");
            assert!(!p.timeline.is_empty(), "{b}: a timeline");
        }
        let lost = part("instance lost", Routing::RoundRobin);
        let rolled = part("rolling restart", Routing::RoundRobin);
        if b.promises().shared_by_instances {
            // Any instance opens any session: a lost instance costs only what was in flight.
            for p in [lost, rolled] {
                assert_eq!(p.shoppers_logged_out, 0, "{b}: {p:?}");
                assert_eq!(p.adds_lost, 0, "{b}: {p:?}");
            }
            // Drained, health-checked, restarted one by one: nothing dropped at all.
            assert_eq!(
                rolled.unanswered + rolled.server_errors,
                0,
                "{b}: {rolled:?}"
            );
        } else {
            // memory: round-robin sends shoppers where their session is not.
            assert!(lost.shoppers_logged_out > 0, "{b}: {lost:?}");
            let sticky = part("instance lost", Routing::Sticky);
            assert!(
                sticky.shoppers_logged_out > 0,
                "{b}: the killed instance's shoppers lose their sessions: {sticky:?}"
            );
            let sticky_rolled = part("rolling restart", Routing::Sticky);
            assert!(
                sticky_rolled.shoppers_logged_out > 0,
                "{b}: {sticky_rolled:?}"
            );
        }
    }
    let html = std::fs::read_to_string(run().out.join("report.html")).expect("report.html");
    assert!(html.contains(r#"data-test="fleet""#));
    assert!(html.contains(r#"data-test="fleet-timelines""#));
}

/// The redis backend's fleet also goes through a failover of a Redis Cluster master (the
/// experiment starts a cluster of its own): answers are 503 at worst, nobody is logged out and
/// no acknowledged add is lost once the replica took over.
#[test]
fn on_redis_the_fleet_rides_out_a_cluster_master_failover() {
    let Some(url) = common::services::service_url(common::services::REDIS_ENV) else {
        return;
    };
    let run = compare_with(&["--backends", "redis", "--redis-url", &url])
        .unwrap_or_else(|why| panic!("{why}"));
    let redis = &run.report.backends[0];
    let fleet = redis.fleet.measured().expect("the fleet ran on redis");
    let part = |name: &str| {
        fleet
            .parts
            .iter()
            .find(|p| p.part == name)
            .unwrap_or_else(|| panic!("a {name} part: {fleet:?}"))
    };
    // Drained, health-checked, restarted one by one: nothing dropped, nobody logged out.
    let rolled = part("rolling restart");
    assert_eq!(rolled.unanswered + rolled.server_errors, 0, "{rolled:?}");
    assert_eq!(rolled.shoppers_logged_out, 0, "{rolled:?}");
    assert_eq!(rolled.adds_lost, 0, "{rolled:?}");
    let failover = part("store failover");
    assert!(failover.requests > 0, "{failover:?}");
    assert_eq!(failover.unanswered, 0, "{failover:?}");
    assert_eq!(failover.shoppers_logged_out, 0, "{failover:?}");
    assert_eq!(failover.adds_lost, 0, "{failover:?}");
}

#[test]
fn guests_cost_the_server_only_where_it_keeps_state_and_last_as_the_backend_promises() {
    for b in BACKENDS {
        let g = backend(b).guests.measured().expect("guests ran");
        assert_eq!(g.guests, 40, "{b}");
        assert!(g.cookie_bytes > 0, "{b}: {g:?}");
        if b.promises().state_on_server {
            assert!(g.server_bytes_each > 0, "{b} keeps the guest: {g:?}");
            assert!(g.cookie_bytes < 200, "{b}: the cookie is a key: {g:?}");
        } else {
            assert_eq!(g.server_bytes_each, 0, "{b} keeps nothing: {g:?}");
        }
        assert!(
            g.sampled_after_restart > 0,
            "{b}: carts were sampled: {g:?}"
        );
        let all_kept = g.kept_after_restart == g.sampled_after_restart;
        assert_eq!(all_kept, b.promises().survives_restart, "{b}: {g:?}");
        assert_eq!(g.flood_sent, 100, "{b}");
        if b.promises().state_on_server {
            // 30 at once, then one per two seconds: most of a quick flood is refused.
            assert!(g.flood_refused >= 50, "{b} bounds new guests: {g:?}");
        } else {
            assert_eq!(g.flood_refused, 0, "{b} has no guest state to bound: {g:?}");
        }
    }
    let html = std::fs::read_to_string(run().out.join("report.html")).expect("report.html");
    assert!(html.contains(r#"data-test="guests""#));
}

#[test]
fn revoke_one_device_ends_the_other_session_wherever_the_server_can_list_it() {
    for b in &run().report.backends {
        let r = b.revoke_one.measured().expect("revoke one device ran");
        let can = b.backend != SessionBackend::Cookie || b.cookie_revocation;
        assert_eq!(r.ended, can, "{}: {r:?}", b.variant);
        assert_eq!(r.listed, if can { 2 } else { 0 }, "{}: {r:?}", b.variant);
        assert!(
            r.first_kept,
            "{}: the browser that ended it goes on",
            b.variant
        );
    }
    let table = run().report.to_text();
    assert!(table.contains("revoke one device"), "{table}");
    let cookie = table
        .lines()
        .find(|l| l.starts_with("cookie "))
        .expect("the cookie row");
    assert!(
        cookie.contains("cannot list") && !cookie.contains('!'),
        "{cookie}"
    );
}

#[test]
fn the_html_report_is_self_contained_with_the_table_and_charts() {
    let html = std::fs::read_to_string(run().out.join("report.html")).expect("report.html");
    assert!(html.contains("<svg"), "charts are inline SVG");
    assert!(html.contains(r#"data-test="summary""#));
    for variant in ["cookie", "memory", "sqlite"] {
        assert!(
            html.contains(&format!(r#"<th scope="row">{variant}</th>"#)),
            "{variant} row"
        );
    }
    // Nothing to fetch: no scripts, stylesheets or images from anywhere.
    for outside in ["<script", "<link", "src=\"http", "href=\"http", "@import"] {
        assert!(!html.contains(outside), "{outside}");
    }
}

#[tokio::test]
async fn compare_explains_how_to_make_a_report_until_there_is_one_then_serves_it() {
    let app = spawn_app(Variant::Cookie).await;
    let res = app.get("/compare").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_set_cookie(&res, "/compare");
    let body = res.text().await.expect("body");
    assert!(body.contains("cargo run -- compare"), "{body}");

    let dir = app.settings.data_dir.join("compare");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("report.html"), "<!doctype html><p>the report</p>").expect("write");
    let res = app.get("/compare").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_no_set_cookie(&res, "/compare");
    assert_eq!(
        res.text().await.expect("body"),
        "<!doctype html><p>the report</p>"
    );
}

#[tokio::test]
async fn the_about_page_links_to_the_comparison() {
    let app = spawn_app(Variant::Cookie).await;
    let body = app.page("/about").await;
    assert!(body.contains(r#"href="/compare""#));
}
