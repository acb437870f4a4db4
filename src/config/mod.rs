//! Settings: defaults < TOML file < `STATECART_*` env < CLI flags, loaded and validated once.
//!
//! Every key is declared once, in the `settings!` table below: the key, the field the app
//! reads, the rule that checks it ([`rules`]), its default and its help line. The settings
//! struct, the raw layer (TOML keys, `STATECART_*` env variables, `--flags`), the start-up log
//! line and [`KEYS`] (which a test holds the README table to) all come from that table.

pub mod rules;

use std::{fmt, net::SocketAddr, path::Path, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

use ipnet::IpNet;
use rules::{
    Count, Dir, Each, InstanceName, KeyPrefix, MetricsListen, Parsed, PreviousKeys, RedisUrl, Rule,
    Secs, SessionKey,
};
pub use rules::{DatabaseUrl, Dialect, decode_session_key, mask_url};

/// Where login-session and cart state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionBackend {
    /// An encrypted cookie in the browser: the server keeps nothing.
    Cookie,
    /// The process's memory.
    Memory,
    /// The `sessions` table of the app database.
    Database,
    /// Redis keys with a TTL.
    Redis,
}

impl SessionBackend {
    /// Every backend, in the order the docs list them.
    pub const ALL: [SessionBackend; 4] = [Self::Cookie, Self::Memory, Self::Database, Self::Redis];

    /// The config spelling of this backend.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cookie => "cookie",
            Self::Memory => "memory",
            Self::Database => "database",
            Self::Redis => "redis",
        }
    }

    /// Parses the config spelling.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == value)
    }

    /// Whether the server (or a store it owns) keeps the state.
    pub fn is_stateful(self) -> bool {
        self != Self::Cookie
    }
}

impl fmt::Display for SessionBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, with the request span's fields (request id, method, path),
    /// for a log pipeline that joins a fleet's lines.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// One key of the config contract, as the README table documents it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// As spelled in TOML; the env variable is `STATECART_` + upper case, the flag `--` +
    /// dashes.
    pub name: &'static str,
    /// The default, as the README table's second column writes it (Markdown).
    pub default: &'static str,
    /// One line on what the key does.
    pub help: &'static str,
}

impl Key {
    /// The env variable that sets this key.
    pub fn env(&self) -> String {
        format!("STATECART_{}", self.name.to_ascii_uppercase())
    }

    /// The command-line flag that sets this key.
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }
}

/// The flag's help line: the key's help and its default, without Markdown.
fn help_line(key: &Key) -> String {
    format!("{} [default: {}]", key.help, key.default.replace('`', ""))
}

/// Declares the settings: for each key, `key => field: Rule = default, "default as documented",
/// "help"`. Defaults may use the fields declared above them.
macro_rules! settings {
    ($($key:ident => $field:ident: $rule:ty = $default:expr, $shown:literal, $help:literal;)+) => {
        /// The validated settings the whole app runs on.
        #[derive(Clone)]
        pub struct Settings {
            $(#[doc = $help] pub $field: <$rule as Rule>::Value,)+
        }

        /// Every key of the config contract, in the order of the log line.
        pub const KEYS: &[Key] = &[$(Key { name: stringify!($key), default: $shown, help: $help }),+];

        /// One layer of configuration, every key optional, as a source gives it: a TOML file,
        /// the `STATECART_*` env, or the flags (the same struct is the `serve` flags).
        #[derive(Debug, Default, Clone, Serialize, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct RawSettings {
            $(
                #[arg(long, global = true, help = help_line(&Key { name: stringify!($key), default: $shown, help: $help }))]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $key: Option<<$rule as Rule>::Raw>,
            )+
        }

        impl Settings {
            /// Checks one merged layer, filling in the defaults.
            pub fn from_raw(raw: RawSettings) -> Result<Self, ConfigError> {
                $(
                    let $field: <$rule as Rule>::Value = match raw.$key {
                        Some(value) => <$rule as Rule>::parse(value)
                            .map_err(|m| ConfigError::key(stringify!($key), m))?,
                        None => $default,
                    };
                )+
                Self { $($field),+ }.checked_together()
            }
        }

        impl fmt::Display for Settings {
            /// The effective config on one line, secrets masked.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let shown = [$((stringify!($key), <$rule as Rule>::show(&self.$field))),+];
                for (i, (key, value)) in shown.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    write!(f, "{sep}{key}={value}")?;
                }
                Ok(())
            }
        }
    };
}

/// Largest `cart_max_lines` accepted. Past about 300 lines a cookie cart cannot grow anyway:
/// the 4096-byte check refuses the change first.
pub const MAX_CART_LINES: usize = 1000;
const DAY: u64 = 86_400;
/// Longest timeout accepted: longer is "never" in practice, and far beyond it the stores
/// refuse the expiry (moka panics past 1000 years; Redis refuses a huge `EX`).
const YEAR: u64 = 365 * DAY;

settings! {
    listen => listen: Parsed<SocketAddr> = SocketAddr::from(([127, 0, 0, 1], 8080)),
        "`127.0.0.1:8080`",
        "Address to listen on; port 0 picks a free one and the log line says which";
    data_dir => data_dir: Parsed<Dir> = PathBuf::from("data"),
        "`data`",
        "Folder for the SQLite file and the generated key";
    database_url => database_url: Parsed<DatabaseUrl> = DatabaseUrl::sqlite_file(&data_dir.join("statecart.db")),
        "`sqlite://<data_dir>/statecart.db` (created if missing)",
        "sqlite://<path> or postgres://...";
    session_backend => session_backend: Parsed<SessionBackend> = SessionBackend::Database,
        "`database`",
        "Where session and cart live: cookie, memory, database or redis";
    redis_url => redis_url: Parsed<RedisUrl> = "redis://127.0.0.1:6379".to_owned(),
        "`redis://127.0.0.1:6379`",
        "Redis for the redis backend; with redis_cluster, seed nodes of the cluster, comma-separated";
    redis_cluster => redis_cluster: Parsed<bool> = false,
        "`false`",
        "redis_url names seed nodes (comma-separated) of a Redis Cluster, served by a cluster client";
    session_key => session_key: Parsed<SessionKey> = None,
        "generated once, kept in `<data_dir>/session.key` (0600)",
        "Base64 key of at least 64 bytes, shared by instances";
    session_previous_keys => session_previous_keys: PreviousKeys = Vec::new(),
        "empty",
        "Previous session keys, still accepted to open cookies, never to seal them (key rotation); comma-separated";
    idle_timeout_secs => idle_timeout: Secs<1, YEAR> = secs(1800),
        "`1800`",
        "Soft state: a session ends after this much inactivity";
    absolute_timeout_secs => absolute_timeout: Secs<1, YEAR> = secs(DAY),
        "`86400`",
        "A session ends this long after login, whatever the activity";
    login_rate_limit_per_minute => login_rate_limit_per_minute: Count<u32, 0, { u32::MAX as u64 }> = 30,
        "`30`",
        "POSTs to /login and /register per client address per minute; 0 turns the limit off";
    cart_max_lines => cart_max_lines: Count<usize, 1, { MAX_CART_LINES as u64 }> = 50,
        "`50`",
        "Distinct products in one cart (keeps a full cookie cart well under 4096 bytes)";
    live_lease_secs => live_lease: Secs<1, DAY> = secs(60),
        "`60`",
        "Soft state: how long the server pushes cart product changes";
    poll_interval_secs => poll_interval: Secs<1, YEAR> = secs(15),
        "`15`",
        "What clients are told to poll at after a lease";
    admin_users => admin_users: Each<String> = Vec::new(),
        "empty",
        "Existing accounts granted the admin role at start; comma-separated";
    instance => instance: Parsed<InstanceName> = default_instance(),
        "host name",
        "Name in every page footer and in X-Statecart-Instance";
    cookie_secure => cookie_secure: Parsed<bool> = !listen.ip().is_loopback(),
        "`true` unless `listen` is a loopback address",
        "Mark the session cookie Secure (set it when the public URL is https)";
    cookie_revocation => cookie_revocation: Parsed<bool> = false,
        "`false`",
        "Cookie backend only: keep revoked session ids and per-user epochs so logout is real";
    memory_max_sessions => memory_max_sessions: Count<u64, 1, { u64::MAX }> = 100_000,
        "`100000`",
        "Capacity bound of the memory backend (logged-in sessions)";
    guest_idle_timeout_secs => guest_idle_timeout: Secs<1, YEAR> = secs(900),
        "`900`",
        "Soft state: a guest (not logged-in) session ends after this much inactivity";
    memory_max_guest_sessions => memory_max_guest_sessions: Count<u64, 1, { u64::MAX }> = 20_000,
        "`20000`",
        "Capacity bound of the memory backend's guest sessions, kept apart so guests never push out logged-in sessions";
    guest_sessions_per_minute => guest_sessions_per_minute: Count<u32, 0, { u32::MAX as u64 }> = 30,
        "`30`",
        "New guest sessions one client address may start per minute (memory, database, redis); 0 turns the limit off";
    max_guest_sessions => max_guest_sessions: Count<u64, 1, { u64::MAX }> = 20_000,
        "`20000`",
        "Most guest sessions the database and redis backends hold at once; a new guest beyond it gets 503";
    redis_key_prefix => redis_key_prefix: Parsed<KeyPrefix> = "statecart:".to_owned(),
        "`statecart:`",
        "Prefix of every Redis key the redis backend writes";
    live_max_leases => live_max_leases: Count<usize, 1, { u64::MAX }> = 10_000,
        "`10000`",
        "Most live-update leases this process holds at once";
    live_max_leases_per_user => live_max_leases_per_user: Count<usize, 1, { u64::MAX }> = 5,
        "`5`",
        "Most live-update leases one user holds at once (one per open cart tab)";
    trusted_proxies => trusted_proxies: Each<IpNet> = Vec::new(),
        "empty",
        "Peers (addresses or CIDRs) whose X-Forwarded-For names the client; comma-separated";
    body_read_timeout_secs => body_read_timeout: Secs<1, 300> = secs(10),
        "`10`",
        "How long a request body may take to arrive before the answer is 408";
    admin_reauth_secs => admin_reauth_after: Secs<0, DAY> = secs(300),
        "`300`",
        "Price and stock changes ask for the password again this long after login; 0 always asks";
    shutdown_drain_secs => shutdown_drain: Secs<0, 600> = secs(5),
        "`5`",
        "On SIGTERM or SIGINT: how long /healthz answers 503 while the server goes on serving, every response closing its connection, before it stops accepting; 0 stops at once";
    metrics_listen => metrics_listen: Parsed<MetricsListen> = None,
        "empty (on `listen`)",
        "Address of a listener of its own for /metrics (then not served on listen); empty serves it on listen";
    log_format => log_format: Parsed<LogFormat> = LogFormat::Text,
        "`text`",
        "Log lines on stderr: text or json (one object per line, with the request id)";
    max_sessions_per_user => max_sessions_per_user: Count<usize, 1, 10_000> = 20,
        "`20`",
        "Sessions one user keeps at once; a login beyond it ends the user's least recently active session";
}

fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n)
}

/// A configuration mistake: one line naming the key and what is allowed.
#[derive(Debug, thiserror::Error)]
#[error("config error: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn key(key: &str, message: impl fmt::Display) -> Self {
        Self(format!("`{key}` {message}"))
    }
}

impl Settings {
    /// Checks the keys that only make sense together.
    fn checked_together(self) -> Result<Self, ConfigError> {
        let nodes = crate::session::redis::seed_nodes(&self.redis_url).len();
        if nodes > 1 && !self.redis_cluster {
            return Err(ConfigError::key(
                "redis_url",
                format!(
                    "names {nodes} nodes; several nodes are the seeds of a Redis Cluster: set redis_cluster = true"
                ),
            ));
        }
        if self.redis_cluster && self.redis_key_prefix.contains(['{', '}']) {
            // A hash tag in the prefix would put every key into one slot, on one master.
            return Err(ConfigError::key(
                "redis_key_prefix",
                "must not hold `{` or `}` with redis_cluster: a hash tag would put every session on one master",
            ));
        }
        Ok(self)
    }

    /// Loads defaults < TOML file < `STATECART_*` env < `cli` and validates the result.
    pub fn load(config_file: Option<&Path>, cli: RawSettings) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = config_file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        let raw: RawSettings = figment
            .merge(Env::prefixed("STATECART_").only(&names))
            .merge(Serialized::defaults(cli))
            .extract()
            .map_err(describe_figment_error)?;
        Self::from_raw(raw)
    }

    /// Defaults for everything, with the database and key under `data_dir`.
    pub fn defaults_in(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        // Unit-tested: the defaults alone are valid settings.
        let mut settings = Self::from_raw(RawSettings::default())
            .unwrap_or_else(|e| unreachable!("the defaults are valid settings: {e}"));
        settings.database_url = DatabaseUrl::sqlite_file(&data_dir.join("statecart.db"));
        settings.data_dir = data_dir;
        settings
    }

    /// The session cookie's name: with `Secure`, the `__Host-` prefix makes browsers refuse
    /// the cookie unless it came over https for this very host, with `Path=/` and no domain.
    pub fn cookie_name(&self) -> &'static str {
        if self.cookie_secure {
            "__Host-statecart"
        } else {
            "statecart"
        }
    }
}

fn default_instance() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    if host.is_empty() || !host.is_ascii() {
        "statecart".to_owned()
    } else {
        host
    }
}

fn describe_figment_error(err: figment::Error) -> ConfigError {
    let key = err.path.join(".");
    let source = err
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", m.name))
        .unwrap_or_default();
    let kind = match &err.kind {
        figment::error::Kind::UnknownField(field, _) => {
            let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
            format!("unknown key `{field}`; known keys: {}", names.join(", "))
        }
        other => other.to_string(),
    };
    if key.is_empty() {
        ConfigError(format!("{kind}{source}"))
    } else {
        ConfigError(format!("`{key}` {kind}{source}"))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::{
        rules::{List, Text},
        *,
    };

    #[test]
    fn an_unknown_backend_names_the_key_and_the_allowed_values() {
        let raw = RawSettings {
            session_backend: Some(Text("files".into())),
            ..Default::default()
        };
        let err = Settings::from_raw(raw)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("session_backend"), "{err}");
        assert!(err.contains("cookie, memory, database, redis"), "{err}");
    }

    #[test]
    fn the_database_url_defaults_into_the_data_dir() {
        let raw = RawSettings {
            data_dir: Some(Text("/tmp/x".into())),
            ..Default::default()
        };
        let s = Settings::from_raw(raw).expect("valid");
        assert_eq!(s.database_url.as_str(), "sqlite:///tmp/x/statecart.db");
        assert_eq!(s.database_url.dialect(), Dialect::Sqlite);
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_url("postgres://app:hunter2@db/shop"),
            "postgres://app:***@db/shop"
        );
        assert_eq!(mask_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn the_cookie_is_secure_by_default_off_loopback_only() {
        let on = |listen: &str, secure: Option<bool>| {
            Settings::from_raw(RawSettings {
                listen: Some(Text(listen.into())),
                cookie_secure: secure.map(|s| Text(s.to_string())),
                ..Default::default()
            })
            .map(|s| (s.cookie_secure, s.cookie_name()))
            .ok()
        };
        assert_eq!(on("127.0.0.1:8080", None), Some((false, "statecart")));
        assert_eq!(on("[::1]:8080", None), Some((false, "statecart")));
        assert_eq!(on("0.0.0.0:8080", None), Some((true, "__Host-statecart")));
        assert_eq!(on("0.0.0.0:8080", Some(false)), Some((false, "statecart")));
        assert_eq!(
            on("127.0.0.1:8080", Some(true)),
            Some((true, "__Host-statecart"))
        );
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let raw = RawSettings {
            trusted_proxies: Some("10.0.0.0/8, ::1,192.0.2.7".parse().expect("a list")),
            ..Default::default()
        };
        let s = Settings::from_raw(raw).expect("valid");
        let shown: Vec<String> = s.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        let raw = RawSettings {
            trusted_proxies: Some(List(vec!["nginx".into()])),
            ..Default::default()
        };
        let err = Settings::from_raw(raw).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("trusted_proxies")));
    }

    #[test]
    fn lease_and_body_timeouts_are_bounded() {
        for (lease, body) in [
            (Some(0), None),
            (Some(86_401), None),
            (None, Some(0)),
            (None, Some(301)),
        ] {
            let raw = RawSettings {
                live_lease_secs: lease,
                body_read_timeout_secs: body,
                ..Default::default()
            };
            assert!(Settings::from_raw(raw).is_err(), "{lease:?} {body:?}");
        }
        let raw = RawSettings {
            live_lease_secs: Some(86_400),
            body_read_timeout_secs: Some(300),
            ..Default::default()
        };
        assert!(Settings::from_raw(raw).is_ok());
    }

    #[test]
    fn short_session_keys_are_refused() {
        assert!(decode_session_key("c2hvcnQ=").is_err());
        let long = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        assert_eq!(decode_session_key(&long).map(|k| k.len()), Ok(64));
    }

    #[test]
    fn every_literal_default_is_the_value_the_settings_start_with() {
        let settings = Settings::from_raw(RawSettings::default()).expect("the defaults are valid");
        let line = settings.to_string();
        let mut checked = 0;
        for key in KEYS {
            // "`1800`" is a literal default; "host name" or "`true` unless ..." describe one.
            let Some(literal) = key
                .default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .filter(|d| !d.contains('`'))
            else {
                continue;
            };
            let expected = format!("{}={literal} ", key.name);
            assert!(
                format!("{line} ").contains(&expected),
                "{}: documented as {literal}, starts as: {line}",
                key.name
            );
            checked += 1;
        }
        assert!(
            checked >= 15,
            "only {checked} literal defaults were compared"
        );
    }

    #[test]
    fn a_cluster_takes_seed_nodes_and_refuses_a_hash_tag_in_the_prefix() {
        let raw = |prefix: &str| RawSettings {
            redis_url: Some(Text(
                " redis://127.0.0.1:7000 , redis://127.0.0.1:7001".into(),
            )),
            redis_cluster: Some(Text("true".into())),
            redis_key_prefix: Some(Text(prefix.into())),
            ..Default::default()
        };
        let s = Settings::from_raw(raw("shop:")).expect("valid");
        assert_eq!(s.redis_url, "redis://127.0.0.1:7000,redis://127.0.0.1:7001");
        let err = Settings::from_raw(raw("{shop}:"))
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("redis_key_prefix")));
    }

    #[test]
    fn database_urls_name_their_dialect() {
        let pg = DatabaseUrl::parse("postgresql://app:pw@db/shop").expect("valid");
        assert_eq!(pg.dialect(), Dialect::Postgres);
        assert_eq!(pg.to_string(), "postgresql://app:***@db/shop");
        assert!(DatabaseUrl::parse("mysql://db").is_err());
    }
}
