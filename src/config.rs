//! Settings: defaults < TOML file < `STATECART_*` env < CLI flags, loaded and validated once.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine as _;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

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

/// The validated settings the whole app runs on.
#[derive(Clone)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// Where session state lives.
    pub session_backend: SessionBackend,
    /// Used by the `redis` backend.
    pub redis_url: String,
    /// Decoded session key (>= 64 bytes); `None` means "generate once into the data dir".
    pub session_key: Option<Vec<u8>>,
    /// Keys that still open cookies (key rotation), never used to seal; each >= 64 bytes.
    pub session_previous_keys: Vec<Vec<u8>>,
    /// Soft state: a session ends after this much inactivity.
    pub idle_timeout_secs: u64,
    /// A session ends this long after login, whatever the activity.
    pub absolute_timeout_secs: u64,
    /// POSTs to /login and /register per client address per minute; 0 turns it off.
    pub login_rate_limit_per_minute: u32,
    /// Distinct products in one cart.
    pub cart_max_lines: usize,
    /// Soft state: how long the server pushes cart product changes.
    pub live_lease_secs: u64,
    /// What clients are told to poll at after a lease.
    pub poll_interval_secs: u64,
    /// Accounts granted the admin role at start, if they exist by then.
    pub admin_users: Vec<String>,
    /// Shown in every footer and in `X-Statecart-Instance`.
    pub instance: String,
    /// Where the SQLite file and the generated key live.
    pub data_dir: PathBuf,
    /// Mark the session cookie `Secure` (set it when the public URL is https).
    pub cookie_secure: bool,
    /// Cookie backend only: keep revoked session ids and per-user epochs so logout is real.
    pub cookie_revocation: bool,
    /// Capacity bound of the `memory` backend (logged-in sessions).
    pub memory_max_sessions: u64,
    /// Soft state: a guest (not logged-in) session ends after this much inactivity.
    pub guest_idle_timeout_secs: u64,
    /// Capacity bound of the `memory` backend's guest sessions, kept apart so guests never
    /// push out logged-in sessions.
    pub memory_max_guest_sessions: u64,
    /// Prefix of every Redis key the `redis` backend writes.
    pub redis_key_prefix: String,
    /// Most live-update leases this process holds at once.
    pub live_max_leases: usize,
    /// Most live-update leases one user holds at once (one per open cart tab).
    pub live_max_leases_per_user: usize,
    /// Peers (addresses or networks) whose `X-Forwarded-For` names the client; empty: none.
    pub trusted_proxies: Vec<IpNet>,
    /// How long reading one request body may take before the answer is 408.
    pub body_read_timeout: Duration,
    /// Price and stock changes ask for the password again this long after login (0: always).
    pub admin_reauth_after: Duration,
}

/// Every key of the config contract, as spelled in TOML (env: `STATECART_` + upper case).
pub const KEYS: [&str; 26] = [
    "listen",
    "database_url",
    "session_backend",
    "redis_url",
    "session_key",
    "session_previous_keys",
    "idle_timeout_secs",
    "absolute_timeout_secs",
    "login_rate_limit_per_minute",
    "cart_max_lines",
    "live_lease_secs",
    "poll_interval_secs",
    "admin_users",
    "instance",
    "data_dir",
    "cookie_secure",
    "cookie_revocation",
    "memory_max_sessions",
    "guest_idle_timeout_secs",
    "memory_max_guest_sessions",
    "redis_key_prefix",
    "live_max_leases",
    "live_max_leases_per_user",
    "trusted_proxies",
    "body_read_timeout_secs",
    "admin_reauth_secs",
];

/// Default for `cart_max_lines`: keeps the encrypted cookie of a full cart well under 4096 bytes.
pub const DEFAULT_CART_MAX_LINES: usize = 50;
/// Largest `cart_max_lines` accepted. Past about 300 lines a cookie cart cannot grow anyway:
/// the 4096-byte check refuses the change first.
pub const MAX_CART_LINES: usize = 1000;
/// Longest `live_lease_secs` accepted (a day): a lease is a promise the server keeps in memory.
pub const MAX_LIVE_LEASE_SECS: u64 = 86_400;
/// Longest `admin_reauth_secs` accepted: a day, the default absolute session length.
pub const MAX_ADMIN_REAUTH_SECS: u64 = 86_400;
/// Longest `body_read_timeout_secs` accepted.
pub const MAX_BODY_READ_TIMEOUT_SECS: u64 = 300;

/// One layer of configuration: every key optional, as a source gives it. The same struct is
/// the `serve` flags, so the key list exists once.
#[derive(Debug, Default, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Address to listen on (port 0 picks a free one) [default: 127.0.0.1:8080]
    #[arg(long, global = true)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub listen: Option<String>,
    /// sqlite://<path> or postgres://... [default: sqlite://<data_dir>/statecart.db]
    #[arg(long, global = true)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub database_url: Option<String>,
    /// Where session and cart live: cookie, memory, database or redis [default: database]
    #[arg(long, global = true)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub session_backend: Option<String>,
    /// Redis for the redis backend [default: redis://127.0.0.1:6379]
    #[arg(long, global = true)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub redis_url: Option<String>,
    /// Base64 key of at least 64 bytes, shared by instances [default: generated into <data_dir>/session.key]
    #[arg(long, global = true)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub session_key: Option<String>,
    /// Previous session keys, still accepted to open cookies (rotation), comma-separated [default: none]
    #[arg(long, global = true, value_delimiter = ',')]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_list"
    )]
    pub session_previous_keys: Option<Vec<String>>,
    /// A session ends after this much inactivity [default: 1800]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// A session ends this long after login [default: 86400]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_timeout_secs: Option<u64>,
    /// POSTs to /login and /register per client address per minute; 0 = off [default: 30]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_rate_limit_per_minute: Option<u32>,
    /// Distinct products in one cart [default: 50]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cart_max_lines: Option<usize>,
    /// How long the server pushes cart product changes [default: 60]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_lease_secs: Option<u64>,
    /// What clients poll at after a lease ends [default: 15]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_secs: Option<u64>,
    /// Existing accounts made admins at start, comma-separated [default: none]
    #[arg(long, global = true, value_delimiter = ',')]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_list"
    )]
    pub admin_users: Option<Vec<String>>,
    /// Name in every footer and X-Statecart-Instance [default: host name]
    #[arg(long, global = true)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub instance: Option<String>,
    /// Folder for the SQLite file and the generated key [default: data]
    #[arg(long, global = true)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub data_dir: Option<String>,
    /// Mark the session cookie Secure (when served over https) [default: false]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_secure: Option<bool>,
    /// Cookie backend: keep revoked ids and per-user epochs so logout is real [default: false]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_revocation: Option<bool>,
    /// Capacity of the memory backend [default: 100000]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max_sessions: Option<u64>,
    /// A guest session ends after this much inactivity [default: 900]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_idle_timeout_secs: Option<u64>,
    /// Capacity of the memory backend for guest sessions [default: 20000]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max_guest_sessions: Option<u64>,
    /// Prefix of every Redis key of the redis backend [default: statecart:]
    #[arg(long, global = true)]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_string"
    )]
    pub redis_key_prefix: Option<String>,
    /// Most live-update leases this process holds [default: 10000]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_max_leases: Option<usize>,
    /// Most live-update leases per user [default: 5]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_max_leases_per_user: Option<usize>,
    /// Proxies whose X-Forwarded-For is believed: addresses or CIDRs, comma-separated [default: none]
    #[arg(long, global = true, value_delimiter = ',')]
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_list"
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Seconds a request body may take to arrive before 408 [default: 10]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_read_timeout_secs: Option<u64>,
    /// Seconds after login before admin changes ask for the password again; 0 = always [default: 300]
    #[arg(long, global = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_reauth_secs: Option<u64>,
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
        let raw: RawSettings = figment
            .merge(Env::prefixed("STATECART_").only(&KEYS))
            .merge(Serialized::defaults(cli))
            .extract()
            .map_err(describe_figment_error)?;
        Self::from_raw(raw)
    }

    /// Defaults for everything, with the database and key under `data_dir`.
    pub fn defaults_in(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: default_database_url(&data_dir),
            session_backend: SessionBackend::Database,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            session_key: None,
            session_previous_keys: Vec::new(),
            idle_timeout_secs: 1800,
            absolute_timeout_secs: 86_400,
            login_rate_limit_per_minute: 30,
            cart_max_lines: DEFAULT_CART_MAX_LINES,
            live_lease_secs: 60,
            poll_interval_secs: 15,
            admin_users: Vec::new(),
            instance: default_instance(),
            data_dir,
            cookie_secure: false,
            cookie_revocation: false,
            memory_max_sessions: 100_000,
            guest_idle_timeout_secs: 900,
            memory_max_guest_sessions: 20_000,
            redis_key_prefix: "statecart:".to_owned(),
            live_max_leases: 10_000,
            live_max_leases_per_user: 5,
            trusted_proxies: Vec::new(),
            body_read_timeout: Duration::from_secs(10),
            admin_reauth_after: Duration::from_secs(300),
        }
    }

    /// Validates one merged layer into settings, filling defaults.
    pub fn from_raw(raw: RawSettings) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(raw.data_dir.unwrap_or_else(|| "data".to_owned()));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::key("data_dir", "must not be empty"));
        }
        let mut s = Self::defaults_in(data_dir);

        if let Some(listen) = raw.listen {
            s.listen = listen.parse().map_err(|_| {
                ConfigError::key(
                    "listen",
                    format!("is {listen:?}; expected an address like 127.0.0.1:8080"),
                )
            })?;
        }
        if let Some(url) = raw.database_url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                return Err(ConfigError::key(
                    "database_url",
                    format!(
                        "is {:?}; expected sqlite://<path> or postgres://...",
                        mask_url(&url)
                    ),
                ));
            }
            s.database_url = url;
        }
        if let Some(backend) = raw.session_backend {
            s.session_backend = SessionBackend::parse(&backend).ok_or_else(|| {
                ConfigError::key(
                    "session_backend",
                    format!("is {backend:?}; allowed values: cookie, memory, database, redis"),
                )
            })?;
        }
        if let Some(url) = raw.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::key(
                    "redis_url",
                    format!("is {:?}; expected redis://host:port", mask_url(&url)),
                ));
            }
            s.redis_url = url;
        }
        if let Some(key) = raw.session_key {
            s.session_key =
                Some(decode_session_key(&key).map_err(|m| ConfigError::key("session_key", m))?);
        }
        if let Some(keys) = raw.session_previous_keys {
            s.session_previous_keys = keys
                .iter()
                .map(|k| k.trim())
                .filter(|k| !k.is_empty())
                .enumerate()
                .map(|(i, k)| {
                    decode_session_key(k).map_err(|m| {
                        ConfigError::key("session_previous_keys", format!("entry {}: {m}", i + 1))
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = raw.idle_timeout_secs {
            s.idle_timeout_secs = positive("idle_timeout_secs", v)?;
        }
        if let Some(v) = raw.absolute_timeout_secs {
            s.absolute_timeout_secs = positive("absolute_timeout_secs", v)?;
        }
        if let Some(v) = raw.login_rate_limit_per_minute {
            s.login_rate_limit_per_minute = v;
        }
        if let Some(v) = raw.cart_max_lines {
            if !(1..=MAX_CART_LINES).contains(&v) {
                return Err(ConfigError::key(
                    "cart_max_lines",
                    format!("is {v}; allowed: 1 to {MAX_CART_LINES}"),
                ));
            }
            s.cart_max_lines = v;
        }
        if let Some(v) = raw.live_lease_secs {
            if !(1..=MAX_LIVE_LEASE_SECS).contains(&v) {
                return Err(ConfigError::key(
                    "live_lease_secs",
                    format!("is {v}; allowed: 1 to {MAX_LIVE_LEASE_SECS}"),
                ));
            }
            s.live_lease_secs = v;
        }
        if let Some(v) = raw.poll_interval_secs {
            s.poll_interval_secs = positive("poll_interval_secs", v)?;
        }
        if let Some(users) = raw.admin_users {
            s.admin_users = users;
        }
        if let Some(instance) = raw.instance {
            let instance = instance.trim().to_owned();
            if instance.is_empty() || instance.len() > 64 || !instance.is_ascii() {
                return Err(ConfigError::key(
                    "instance",
                    "must be 1 to 64 ASCII characters (it goes into a header)",
                ));
            }
            s.instance = instance;
        }
        // Unset, the cookie is Secure unless the server listens on loopback only: anything
        // reachable from elsewhere should be behind https.
        s.cookie_secure = raw
            .cookie_secure
            .unwrap_or_else(|| !s.listen.ip().is_loopback());
        if let Some(v) = raw.cookie_revocation {
            s.cookie_revocation = v;
        }
        if let Some(v) = raw.memory_max_sessions {
            s.memory_max_sessions = positive("memory_max_sessions", v)?;
        }
        if let Some(v) = raw.guest_idle_timeout_secs {
            s.guest_idle_timeout_secs = positive("guest_idle_timeout_secs", v)?;
        }
        if let Some(v) = raw.memory_max_guest_sessions {
            s.memory_max_guest_sessions = positive("memory_max_guest_sessions", v)?;
        }
        if let Some(v) = raw.live_max_leases {
            s.live_max_leases =
                usize::try_from(positive("live_max_leases", v as u64)?).unwrap_or(usize::MAX);
        }
        if let Some(v) = raw.live_max_leases_per_user {
            s.live_max_leases_per_user =
                usize::try_from(positive("live_max_leases_per_user", v as u64)?)
                    .unwrap_or(usize::MAX);
        }
        if let Some(prefix) = raw.redis_key_prefix {
            if prefix.is_empty() || prefix.len() > 64 || prefix.chars().any(char::is_whitespace) {
                return Err(ConfigError::key(
                    "redis_key_prefix",
                    "must be 1 to 64 characters without spaces",
                ));
            }
            s.redis_key_prefix = prefix;
        }
        if let Some(proxies) = raw.trusted_proxies {
            s.trusted_proxies = proxies
                .iter()
                .map(|p| parse_network(p))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    ConfigError::key(
                        "trusted_proxies",
                        format!(
                            "is {proxies:?}; expected addresses or networks like 10.0.0.1, 10.0.0.0/8, ::1"
                        ),
                    )
                })?;
        }
        if let Some(v) = raw.body_read_timeout_secs {
            if !(1..=MAX_BODY_READ_TIMEOUT_SECS).contains(&v) {
                return Err(ConfigError::key(
                    "body_read_timeout_secs",
                    format!("is {v}; allowed: 1 to {MAX_BODY_READ_TIMEOUT_SECS}"),
                ));
            }
            s.body_read_timeout = Duration::from_secs(v);
        }
        if let Some(v) = raw.admin_reauth_secs {
            if v > MAX_ADMIN_REAUTH_SECS {
                return Err(ConfigError::key(
                    "admin_reauth_secs",
                    format!("is {v}; allowed: 0 to {MAX_ADMIN_REAUTH_SECS}"),
                ));
            }
            s.admin_reauth_after = Duration::from_secs(v);
        }
        Ok(s)
    }

    /// Whether the database is PostgreSQL (otherwise SQLite).
    pub fn uses_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
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

impl fmt::Display for Settings {
    /// The effective config on one line, secrets masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listen={} database_url={} session_backend={} redis_url={} session_key={} \
             session_previous_keys=<{} set> \
             idle_timeout_secs={} absolute_timeout_secs={} login_rate_limit_per_minute={} \
             cart_max_lines={} live_lease_secs={} poll_interval_secs={} admin_users=[{}] \
             instance={} data_dir={} cookie_secure={} cookie_revocation={} memory_max_sessions={} \
             guest_idle_timeout_secs={} memory_max_guest_sessions={} redis_key_prefix={} \
             live_max_leases={} live_max_leases_per_user={} trusted_proxies=[{}] \
             body_read_timeout_secs={} admin_reauth_secs={}",
            self.listen,
            mask_url(&self.database_url),
            self.session_backend,
            mask_url(&self.redis_url),
            if self.session_key.is_some() {
                "<set>"
            } else {
                "<from data_dir>"
            },
            self.session_previous_keys.len(),
            self.idle_timeout_secs,
            self.absolute_timeout_secs,
            self.login_rate_limit_per_minute,
            self.cart_max_lines,
            self.live_lease_secs,
            self.poll_interval_secs,
            self.admin_users.join(","),
            self.instance,
            self.data_dir.display(),
            self.cookie_secure,
            self.cookie_revocation,
            self.memory_max_sessions,
            self.guest_idle_timeout_secs,
            self.memory_max_guest_sessions,
            self.redis_key_prefix,
            self.live_max_leases,
            self.live_max_leases_per_user,
            self.trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.body_read_timeout.as_secs(),
            self.admin_reauth_after.as_secs(),
        )
    }
}

/// Decodes a base64 session key and checks it is long enough.
pub fn decode_session_key(encoded: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "is not valid base64".to_owned())?;
    if bytes.len() < 64 {
        return Err(format!(
            "decodes to {} bytes; at least 64 are needed",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Hides the password of `scheme://user:password@host/...`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("statecart.db").display())
}

fn default_instance() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    if host.is_empty() || !host.is_ascii() {
        "statecart".to_owned()
    } else {
        host
    }
}

/// An address (a network of one) or a network in CIDR notation.
fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

fn positive(key: &str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        Err(ConfigError::key(key, "must be at least 1"))
    } else {
        Ok(value)
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
            format!("unknown key `{field}`; known keys: {}", KEYS.join(", "))
        }
        other => other.to_string(),
    };
    if key.is_empty() {
        ConfigError(format!("{kind}{source}"))
    } else {
        ConfigError(format!("`{key}` {kind}{source}"))
    }
}

/// Env values like `42` or `true` arrive typed; a string setting takes them as written.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(Some(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    }))
}

/// A list given as a TOML array or as one comma-separated string (env, flags).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        Many(Vec<String>),
        One(String),
    }
    let items = match List::deserialize(d)? {
        List::Many(v) => v,
        List::One(s) => s.split(',').map(str::to_owned).collect(),
    };
    Ok(Some(
        items
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_backend_names_the_key_and_the_allowed_values() {
        let raw = RawSettings {
            session_backend: Some("files".into()),
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
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let s = Settings::from_raw(raw).expect("valid");
        assert_eq!(s.database_url, "sqlite:///tmp/x/statecart.db");
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
                listen: Some(listen.into()),
                cookie_secure: secure,
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
            trusted_proxies: Some(vec!["10.0.0.0/8".into(), "::1".into(), "192.0.2.7".into()]),
            ..Default::default()
        };
        let s = Settings::from_raw(raw).expect("valid");
        let shown: Vec<String> = s.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        let raw = RawSettings {
            trusted_proxies: Some(vec!["nginx".into()]),
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
}
