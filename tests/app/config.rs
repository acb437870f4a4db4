//! The config contract, through the real binary: precedence file < env < flag, and exit 2.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn statecart() -> Command {
    // Only what each test sets: no STATECART_* from the developer's shell.
    statecart::sandbox::command(std::path::Path::new(env!("CARGO_BIN_EXE_statecart")))
}

/// Starts `serve`, waits for the config log line, stops the process and returns that line.
fn effective_config(mut cmd: Command) -> String {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn statecart");
    let stderr = child.stderr.take().expect("stderr");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("utf-8 log line");
        if line.contains("starting statecart") {
            found = Some(line);
            break;
        }
        assert!(Instant::now() < deadline, "no config line in time");
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = found.expect("the effective config is logged at start");
    // With `log_format = "json"` the line is an object; the config is its `config` field.
    match serde_json::from_str::<serde_json::Value>(&line) {
        Ok(object) => object["fields"]["config"]
            .as_str()
            .unwrap_or_else(|| panic!("a JSON log line without fields.config: {line}"))
            .to_owned(),
        Err(_) => line,
    }
}

#[test]
fn a_flag_beats_env_which_beats_the_file_which_beats_the_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("statecart.toml");
    std::fs::write(
        &file,
        "instance = \"from-file\"\nidle_timeout_secs = 111\nabsolute_timeout_secs = 222\n\
         poll_interval_secs = 333\nsession_backend = \"memory\"\n",
    )
    .expect("write config");
    let mut cmd = statecart();
    cmd.arg("serve")
        .arg("--config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--absolute-timeout-secs", "666"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("STATECART_IDLE_TIMEOUT_SECS", "444")
        .env("STATECART_ABSOLUTE_TIMEOUT_SECS", "555")
        .env("STATECART_ADMIN_USERS", "alice, bob");
    let line = effective_config(cmd);
    for expected in [
        "instance=from-file",        // file beats default
        "poll_interval_secs=333",    // file only
        "idle_timeout_secs=444",     // env beats file
        "absolute_timeout_secs=666", // flag beats env and file
        "session_backend=memory",    // file
        "live_lease_secs=60",        // default
        "admin_users=[alice,bob]",   // comma-separated in env
    ] {
        assert!(line.contains(expected), "{expected} missing in: {line}");
    }
}

#[test]
fn secrets_are_masked_in_the_logged_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = "a".repeat(88);
    let mut cmd = statecart();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("STATECART_SESSION_KEY", &key)
        .env("STATECART_REDIS_URL", "redis://user:hunter2@127.0.0.1:6379");
    let line = effective_config(cmd);
    assert!(!line.contains(&key), "the session key is never logged");
    assert!(
        !line.contains("hunter2"),
        "passwords in URLs are never logged"
    );
    assert!(line.contains("session_key=<set>"));
}

fn fails_with_exit_2(args: &[&str], env: &[(&str, &str)], must_mention: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = statecart();
    cmd.args(args).arg("--data-dir").arg(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run statecart");
    assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one clear line, got: {stderr}");
    for word in must_mention {
        assert!(lines[0].contains(word), "{word:?} missing in: {}", lines[0]);
    }
}

/// How a bad value is given to `statecart serve`.
#[derive(Debug, Clone, Copy)]
enum Given {
    /// As the `STATECART_<KEY>` variable.
    Env,
    /// As the `--<key>` flag.
    Flag,
}
use Given::{Env, Flag};

/// Each bad value alone: `(how, key, value, what the error names besides the key)`.
type BadValues<'a> = &'a [(Given, &'a str, &'a str, &'a [&'a str])];

/// Runs `serve` once per bad value: each exits 2 with one line naming its key.
fn each_exits_2_naming_its_key(cases: BadValues) {
    for &(given, key, value, also) in cases {
        let known = statecart::config::KEYS
            .iter()
            .find(|k| k.name == key)
            .unwrap_or_else(|| panic!("`{key}` is not a config key"));
        let (flag, var) = (known.flag(), known.env());
        let mentions: Vec<&str> = [key].into_iter().chain(also.iter().copied()).collect();
        match given {
            Env => fails_with_exit_2(&["serve"], &[(&var, value)], &mentions),
            Flag => fails_with_exit_2(&["serve", &flag, value], &[], &mentions),
        }
    }
}

const BACKENDS: &str = "cookie, memory, database, redis";

#[test]
fn an_unknown_backend_exits_2_naming_the_key_and_the_allowed_values() {
    each_exits_2_naming_its_key(&[
        (Env, "session_backend", "files", &[BACKENDS]),
        (Flag, "session_backend", "Cookie", &[BACKENDS]),
    ]);
}

#[test]
fn a_bad_address_url_or_number_exits_2_naming_the_key() {
    each_exits_2_naming_its_key(&[
        (Flag, "listen", "localhost", &["127.0.0.1:8080"]),
        (
            Env,
            "database_url",
            "mysql://x",
            &["sqlite://", "postgres://"],
        ),
        (Env, "redis_url", "localhost:6379", &[]),
        // Several nodes are a cluster's seeds: without redis_cluster they are a mistake.
        (
            Env,
            "redis_url",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
            &["redis_cluster"],
        ),
        (Env, "idle_timeout_secs", "soon", &[]),
        (Env, "session_key", "c2hvcnQ=", &["64"]),
    ]);
}

#[test]
fn out_of_range_security_settings_exit_2_naming_the_key() {
    each_exits_2_naming_its_key(&[
        // A huge lease used to overflow `Instant + Duration` at the first /cart/live.
        (Flag, "live_lease_secs", "18446744073709551615", &["86400"]),
        (Env, "trusted_proxies", "10.0.0.1,nginx", &[]),
        (Flag, "body_read_timeout_secs", "0", &["300"]),
        (Env, "admin_reauth_secs", "99999999", &[]),
        // Past a year a timeout is "never"; far past it moka panics and Redis refuses `EX`.
        (Env, "idle_timeout_secs", "40000000000", &["31536000"]),
        (
            Flag,
            "guest_idle_timeout_secs",
            "18446744073709551615",
            &["31536000"],
        ),
        (Env, "cookie_secure", "maybe", &["true or false"]),
    ]);
}

#[test]
fn the_new_security_settings_are_logged_and_the_cookie_is_secure_off_loopback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = statecart();
    cmd.args([
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--body-read-timeout-secs",
        "7",
    ])
    .arg("--data-dir")
    .arg(dir.path())
    .env("STATECART_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
    .env("STATECART_ADMIN_REAUTH_SECS", "60");
    let line = effective_config(cmd);
    for expected in [
        "trusted_proxies=[127.0.0.1/32,10.0.0.0/8]",
        "body_read_timeout_secs=7",
        "admin_reauth_secs=60",
        "cookie_secure=true",
    ] {
        assert!(line.contains(expected), "{expected} missing in: {line}");
    }
}

#[test]
fn a_missing_config_file_or_unknown_key_exits_2() {
    fails_with_exit_2(
        &["serve", "--config", "/nonexistent/statecart.toml"],
        &[],
        &["config file"],
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "session_backnd = \"cookie\"\n").expect("write");
    fails_with_exit_2(
        &["serve", "--config", file.to_str().expect("utf-8 path")],
        &[],
        &["session_backnd", "session_backend"],
    );
}

#[test]
fn migrate_applies_migrations_and_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = statecart()
        .arg("migrate")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.path().join("statecart.db").is_file(),
        "the SQLite file is created"
    );
}

#[test]
fn every_config_key_has_a_row_in_the_readme_table() {
    let readme = include_str!("../../README.md");
    for key in statecart::config::KEYS {
        assert!(
            readme.contains(&format!("| `{}` | {} |", key.name, key.default)),
            "README's config table has no row for `{}` with the default {}",
            key.name,
            key.default
        );
    }
}

#[test]
fn key_new_prints_a_key_that_session_key_accepts_even_when_the_configured_one_is_bad() {
    let output = statecart()
        .args(["key", "new"])
        .env("STATECART_SESSION_KEY", "c2hvcnQ=")
        .output()
        .expect("run");
    assert!(output.status.success());
    let key = String::from_utf8(output.stdout).expect("utf8");
    let bytes = statecart::config::decode_session_key(key.trim()).expect("a valid session_key");
    assert_eq!(bytes.len(), 64);
}

#[test]
fn a_bad_previous_key_is_a_one_line_error() {
    fails_with_exit_2(
        &["migrate", "--session-previous-keys", "short"],
        &[],
        &["session_previous_keys"],
    );
}

/// One value for every key, none of them its default, and how the log line shows it.
fn a_value_for_every_key(dir: &std::path::Path) -> Vec<(&'static str, String, String)> {
    let key = "a".repeat(88);
    let db = format!("sqlite://{}/other.db", dir.display());
    let data = dir.display().to_string();
    let given_and_shown = |given: &str, shown: &str| (given.to_owned(), shown.to_owned());
    let rows = [
        ("listen", given_and_shown("127.0.0.1:0", "127.0.0.1:0")),
        ("data_dir", (data.clone(), data)),
        ("database_url", (db.clone(), db)),
        ("session_backend", given_and_shown("memory", "memory")),
        (
            "redis_url",
            given_and_shown(
                "redis://127.0.0.1:6390,redis://:pw@127.0.0.1:6391",
                "redis://127.0.0.1:6390,redis://:***@127.0.0.1:6391",
            ),
        ),
        ("redis_cluster", given_and_shown("true", "true")),
        ("session_key", (key.clone(), "<set>".to_owned())),
        ("session_previous_keys", (key, "<1 set>".to_owned())),
        ("idle_timeout_secs", given_and_shown("1234", "1234")),
        ("absolute_timeout_secs", given_and_shown("5678", "5678")),
        ("login_rate_limit_per_minute", given_and_shown("7", "7")),
        ("cart_max_lines", given_and_shown("9", "9")),
        ("live_lease_secs", given_and_shown("61", "61")),
        ("poll_interval_secs", given_and_shown("16", "16")),
        ("admin_users", given_and_shown("carol", "[carol]")),
        ("instance", given_and_shown("from-test", "from-test")),
        ("cookie_secure", given_and_shown("true", "true")),
        ("cookie_revocation", given_and_shown("true", "true")),
        ("memory_max_sessions", given_and_shown("1001", "1001")),
        ("guest_idle_timeout_secs", given_and_shown("901", "901")),
        ("memory_max_guest_sessions", given_and_shown("2001", "2001")),
        ("guest_sessions_per_minute", given_and_shown("31", "31")),
        ("max_guest_sessions", given_and_shown("2002", "2002")),
        ("redis_key_prefix", given_and_shown("t:", "t:")),
        ("live_max_leases", given_and_shown("11", "11")),
        ("live_max_leases_per_user", given_and_shown("3", "3")),
        (
            "trusted_proxies",
            given_and_shown("10.1.0.0/16", "[10.1.0.0/16]"),
        ),
        ("body_read_timeout_secs", given_and_shown("11", "11")),
        ("admin_reauth_secs", given_and_shown("301", "301")),
        ("shutdown_drain_secs", given_and_shown("7", "7")),
        (
            "metrics_listen",
            given_and_shown("127.0.0.1:0", "127.0.0.1:0"),
        ),
        ("log_format", given_and_shown("json", "json")),
        ("max_sessions_per_user", given_and_shown("7", "7")),
    ];
    let mut names: Vec<&str> = rows.iter().map(|(name, _)| *name).collect();
    let mut keys: Vec<&str> = statecart::config::KEYS.iter().map(|k| k.name).collect();
    names.sort_unstable();
    keys.sort_unstable();
    assert_eq!(
        names, keys,
        "this table names every key of the config contract"
    );
    rows.into_iter()
        .map(|(name, (given, shown))| (name, given, shown))
        .collect()
}

#[test]
fn every_key_is_read_from_its_env_variable_and_from_its_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rows = a_value_for_every_key(dir.path());
    let mut by_env = statecart();
    by_env.arg("serve");
    let mut by_flag = statecart();
    by_flag.arg("serve");
    for key in statecart::config::KEYS {
        let (_, given, _) = rows.iter().find(|(n, ..)| *n == key.name).expect("a row");
        by_env.env(key.env(), given);
        by_flag.arg(key.flag()).arg(given);
    }
    for (source, cmd) in [("env", by_env), ("flags", by_flag)] {
        let line = effective_config(cmd);
        for (name, _, shown) in &rows {
            let expected = format!("{name}={shown}");
            assert!(
                format!("{line} ").contains(&format!("{expected} ")),
                "{expected} missing when set by {source}: {line}"
            );
        }
    }
}

#[test]
fn the_help_lists_every_flag_with_its_documented_default() {
    let output = statecart().args(["serve", "--help"]).output().expect("run");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for key in statecart::config::KEYS {
        assert!(
            help.contains(&key.flag()),
            "{} missing in --help",
            key.flag()
        );
        let default = format!("[default: {}]", key.default.replace('`', ""));
        assert!(
            help.contains(&default),
            "{default} missing in --help for {}",
            key.name
        );
    }
}
