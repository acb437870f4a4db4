//! How one config value is read: what a source may give, how it is checked, how it is logged.
//!
//! A rule is a type, so the settings table in `config/mod.rs` can name it once per key and the
//! raw layer (TOML, env, flags), the check and the log line all follow from it.

use std::{
    convert::Infallible,
    fmt,
    marker::PhantomData,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use base64::Engine as _;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

use super::{LogFormat, SessionBackend};

/// One key's rule.
pub trait Rule {
    /// What a source gives before any check: a TOML value, an env string, a flag.
    type Raw: Clone + fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What the app runs on.
    type Value: Clone;
    /// Checks a raw value; the message completes the sentence "`key` ...".
    fn parse(raw: Self::Raw) -> Result<Self::Value, String>;
    /// The value as the start-up log line shows it, secrets masked.
    fn show(value: &Self::Value) -> String;
}

/// A string as a source gives it. Env values such as `42` or `true` arrive typed; a string
/// setting takes them as written.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            U(u64),
            F(f64),
            B(bool),
        }
        Ok(Self(match Scalar::deserialize(d)? {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::U(u) => u.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }))
    }
}

impl FromStr for Text {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A list: a TOML array, or one comma-separated string (env, flags). Items are trimmed and
/// empty ones dropped.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct List(pub Vec<String>);

impl List {
    fn of(items: impl IntoIterator<Item = String>) -> Self {
        Self(
            items
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Many(Vec<String>),
            One(String),
        }
        Ok(match Form::deserialize(d)? {
            Form::Many(items) => Self::of(items),
            Form::One(s) => s.parse().unwrap_or_else(|never: Infallible| match never {}),
        })
    }
}

impl FromStr for List {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::of(s.split(',').map(str::to_owned)))
    }
}

/// Which SQL dialect a database URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Embedded SQLite (the default).
    Sqlite,
    /// PostgreSQL, to scale out.
    Postgres,
}

/// A checked `sqlite:` or `postgres://` URL; the one place the dialect is read off a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    dialect: Dialect,
}

impl DatabaseUrl {
    /// Checks `url`'s scheme.
    pub fn parse(url: &str) -> Result<Self, String> {
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(format!(
                "is {:?}; expected sqlite://<path> or postgres://...",
                mask_url(url)
            ));
        };
        Ok(Self {
            url: url.to_owned(),
            dialect,
        })
    }

    /// The SQLite database in the file `path`.
    pub fn sqlite_file(path: &Path) -> Self {
        Self {
            url: format!("sqlite://{}", path.display()),
            dialect: Dialect::Sqlite,
        }
    }

    /// The URL as given (it may hold a password: log [`DatabaseUrl`]'s `Display` instead).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The dialect the URL names.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }
}

impl fmt::Display for DatabaseUrl {
    /// The URL with its password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url(&self.url))
    }
}

/// A value read from one string and shown as it displays.
pub trait FromText: Sized + Clone + fmt::Display {
    /// Reads the value; the message completes the sentence "`key` ...".
    fn from_text(text: String) -> Result<Self, String>;
}

/// How a setting given as one string is read and shown.
pub trait TextRule {
    /// What the app runs on.
    type Value: Clone;
    /// Reads the value; the message completes the sentence "`key` ...".
    fn read(text: String) -> Result<Self::Value, String>;
    /// The value as the start-up log line shows it, secrets masked.
    fn show(value: &Self::Value) -> String;
}

/// A [`FromText`] value is its own rule.
impl<T: FromText> TextRule for T {
    type Value = T;
    fn read(text: String) -> Result<T, String> {
        T::from_text(text)
    }
    fn show(value: &T) -> String {
        value.to_string()
    }
}

/// The rule of a setting given as one string.
pub struct Parsed<R>(PhantomData<R>);

impl<R: TextRule> Rule for Parsed<R> {
    type Raw = Text;
    type Value = R::Value;
    fn parse(Text(raw): Text) -> Result<R::Value, String> {
        R::read(raw)
    }
    fn show(value: &R::Value) -> String {
        R::show(value)
    }
}

/// The rule of a list of [`FromText`] values, shown as `[a,b]`.
pub struct Each<T>(PhantomData<T>);

impl<T: FromText> Rule for Each<T> {
    type Raw = List;
    type Value = Vec<T>;
    fn parse(List(items): List) -> Result<Vec<T>, String> {
        let many = items.len() > 1;
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                T::from_text(item).map_err(|m| {
                    if many {
                        format!("entry {}: {m}", i + 1)
                    } else {
                        m
                    }
                })
            })
            .collect()
    }
    fn show(value: &Vec<T>) -> String {
        let shown: Vec<String> = value.iter().map(ToString::to_string).collect();
        format!("[{}]", shown.join(","))
    }
}

impl FromText for SocketAddr {
    fn from_text(text: String) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("is {text:?}; expected an address like 127.0.0.1:8080"))
    }
}

impl FromText for DatabaseUrl {
    fn from_text(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl FromText for SessionBackend {
    fn from_text(text: String) -> Result<Self, String> {
        Self::parse(&text)
            .ok_or_else(|| format!("is {text:?}; allowed values: cookie, memory, database, redis"))
    }
}

/// An address (a network of one) or a network in CIDR notation.
impl FromText for IpNet {
    fn from_text(text: String) -> Result<Self, String> {
        text.parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
            .ok_or_else(|| {
                format!(
                    "is {text:?}; expected an address or network like 10.0.0.1, 10.0.0.0/8, ::1"
                )
            })
    }
}

/// `true` or `false`.
impl FromText for bool {
    fn from_text(text: String) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("is {text:?}; expected true or false"))
    }
}

impl FromText for String {
    fn from_text(text: String) -> Result<Self, String> {
        Ok(text)
    }
}

/// `redis://host:port` (or `rediss://`), or several of them comma-separated (the seed nodes of
/// a Redis Cluster); passwords are never logged.
pub struct RedisUrl;

impl TextRule for RedisUrl {
    type Value = String;
    fn read(text: String) -> Result<String, String> {
        let nodes: Vec<&str> = text.split(',').map(str::trim).collect();
        let wrong = nodes
            .iter()
            .find(|url| !(url.starts_with("redis://") || url.starts_with("rediss://")));
        match wrong {
            Some(url) => Err(format!(
                "has {:?}; expected redis://host:port, or several comma-separated for redis_cluster",
                mask_url(url)
            )),
            None => Ok(nodes.join(",")),
        }
    }
    fn show(value: &String) -> String {
        let masked: Vec<String> = value.split(',').map(mask_url).collect();
        masked.join(",")
    }
}

/// A short ASCII name that goes into a header.
pub struct InstanceName;

impl TextRule for InstanceName {
    type Value = String;
    fn read(text: String) -> Result<String, String> {
        let name = text.trim();
        if name.is_empty() || name.len() > 64 || !name.is_ascii() {
            Err("must be 1 to 64 ASCII characters (it goes into a header)".to_owned())
        } else {
            Ok(name.to_owned())
        }
    }
    fn show(value: &String) -> String {
        value.clone()
    }
}

/// A Redis key prefix.
pub struct KeyPrefix;

impl TextRule for KeyPrefix {
    type Value = String;
    fn read(text: String) -> Result<String, String> {
        if text.is_empty() || text.len() > 64 || text.chars().any(char::is_whitespace) {
            Err("must be 1 to 64 characters without spaces".to_owned())
        } else {
            Ok(text)
        }
    }
    fn show(value: &String) -> String {
        value.clone()
    }
}

/// A base64 key of at least 64 bytes; unset means "generated once into the data dir".
pub struct SessionKey;

impl TextRule for SessionKey {
    type Value = Option<Vec<u8>>;
    fn read(text: String) -> Result<Option<Vec<u8>>, String> {
        decode_session_key(&text).map(Some)
    }
    fn show(value: &Option<Vec<u8>>) -> String {
        if value.is_some() {
            "<set>"
        } else {
            "<from data_dir>"
        }
        .to_owned()
    }
}

/// Keys that still open cookies, each as [`SessionKey`]; the log line shows only how many.
pub struct PreviousKeys;

impl Rule for PreviousKeys {
    type Raw = List;
    type Value = Vec<Vec<u8>>;
    fn parse(List(keys): List) -> Result<Vec<Vec<u8>>, String> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| decode_session_key(k).map_err(|m| format!("entry {}: {m}", i + 1)))
            .collect()
    }
    fn show(value: &Vec<Vec<u8>>) -> String {
        format!("<{} set>", value.len())
    }
}

/// A whole number of seconds from `MIN` to `MAX`.
pub struct Secs<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Rule for Secs<MIN, MAX> {
    type Raw = u64;
    type Value = Duration;
    fn parse(raw: u64) -> Result<Duration, String> {
        within(raw, MIN, MAX).map(Duration::from_secs)
    }
    fn show(value: &Duration) -> String {
        value.as_secs().to_string()
    }
}

/// A count from `MIN` to `MAX`, kept as `T`.
pub struct Count<T, const MIN: u64, const MAX: u64>(PhantomData<T>);

impl<T, const MIN: u64, const MAX: u64> Rule for Count<T, MIN, MAX>
where
    T: TryFrom<u64> + Clone + fmt::Display,
{
    type Raw = u64;
    type Value = T;
    fn parse(raw: u64) -> Result<T, String> {
        let value = within(raw, MIN, MAX)?;
        T::try_from(value).map_err(|_| format!("is {value}; too large for this machine"))
    }
    fn show(value: &T) -> String {
        value.to_string()
    }
}

fn within(value: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else if max == u64::MAX {
        Err(format!("must be at least {min}"))
    } else {
        Err(format!("is {value}; allowed: {min} to {max}"))
    }
}

/// An address of its own for `/metrics`, or empty for "on the shop's `listen`".
pub struct MetricsListen;

impl TextRule for MetricsListen {
    type Value = Option<SocketAddr>;
    fn read(text: String) -> Result<Option<SocketAddr>, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        SocketAddr::from_text(text).map(Some)
    }
    fn show(value: &Option<SocketAddr>) -> String {
        value.map_or_else(|| "<listen>".to_owned(), |addr| addr.to_string())
    }
}

impl FromText for LogFormat {
    fn from_text(text: String) -> Result<Self, String> {
        match text.as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("is {text:?}; allowed values: text, json")),
        }
    }
}

/// A folder.
pub struct Dir;

impl TextRule for Dir {
    type Value = PathBuf;
    fn read(text: String) -> Result<PathBuf, String> {
        Some(text)
            .filter(|t| !t.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| "must not be empty".to_owned())
    }
    fn show(value: &PathBuf) -> String {
        value.display().to_string()
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
