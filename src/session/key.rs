//! The keys that encrypt session cookies: the current one (configured, or generated once into
//! the data dir) and previous ones still accepted during a key rotation.

use std::{fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use actix_web::{
    body::MessageBody,
    cookie::{Cookie, CookieJar, Key, SameSite},
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web,
};
use anyhow::Context as _;
use base64::Engine as _;

use crate::config::{Settings, decode_session_key};

/// The configured key, else `<data_dir>/session.key`, created (mode 0600) on first start.
///
/// Loaded once per process and shared by every worker: a key per worker or per start would
/// silently invalidate every cookie.
pub fn load_or_create(settings: &Settings) -> anyhow::Result<Key> {
    if let Some(bytes) = &settings.session_key {
        return Ok(Key::from(bytes));
    }
    let path = settings.data_dir.join("session.key");
    if let Some(key) = read(&path)? {
        return Ok(key);
    }
    fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let key = Key::generate();
    let encoded = base64::engine::general_purpose::STANDARD.encode(key.master());
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(encoded.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new session key");
            Ok(key)
        }
        // Another instance sharing this data dir won the race: use its key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(&path)?.context("session key file appeared empty")
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn read(path: &Path) -> anyhow::Result<Option<Key>> {
    match fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => {
            let bytes = decode_session_key(&text)
                .map_err(|m| anyhow::anyhow!("{}: the session key {m}", path.display()))?;
            Ok(Some(Key::from(&bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_generated_key_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = Settings::defaults_in(dir.path());
        let first = load_or_create(&settings).expect("created");
        let mode = fs::metadata(dir.path().join("session.key"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(&settings).expect("read back");
        assert_eq!(first.master(), second.master());
    }
}

/// The keys that open session cookies: the current one seals them, previous ones (key
/// rotation) only open them.
#[derive(Clone)]
pub struct Keys {
    /// Seals every cookie the server sends.
    pub current: Key,
    /// Still accepted to open a cookie, which is then sealed again with `current`.
    pub previous: Vec<Key>,
}

impl Keys {
    /// The current key (see [`load_or_create`]) and `session_previous_keys`.
    pub fn load(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            current: load_or_create(settings)?,
            previous: settings
                .session_previous_keys
                .iter()
                .map(|bytes| Key::from(bytes))
                .collect(),
        })
    }

    /// A fresh key for `session_key`, base64 (what `statecart key new` prints).
    pub fn new_encoded() -> String {
        base64::engine::general_purpose::STANDARD.encode(Key::generate().master())
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, percent-decoded. Parsed here
/// rather than with `req.cookie`, which would keep the parse for the rest of the request.
fn cookie_value(req: &ServiceRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| Cookie::parse_encoded(pair.trim().to_owned()).ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

fn open(key: &Key, name: &str, value: &str) -> Option<String> {
    CookieJar::new()
        .private(key)
        .decrypt(Cookie::new(name.to_owned(), value.to_owned()))
        .map(|c| c.value().to_owned())
}

fn seal(key: &Key, name: &str, plain: &str) -> Option<String> {
    let mut jar = CookieJar::new();
    jar.private_mut(key)
        .add(Cookie::new(name.to_owned(), plain.to_owned()));
    jar.get(name).map(|c| c.value().to_owned())
}

/// Key rotation, outside the session middleware: a session cookie sealed with a previous key is
/// opened with it and sealed again with the current key, for this request (so the session
/// middleware, which knows one key, reads it) and for the browser (the answer sets the
/// re-sealed cookie, unless it sets a session cookie of its own). After one visit the browser
/// holds a current cookie; once a previous key is dropped, cookies sealed only with it are no
/// session, like any unknown cookie.
pub async fn reseal_previous_keys(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let (Some(keys), Some(settings)) = (
        req.app_data::<web::Data<Keys>>().cloned(),
        req.app_data::<web::Data<Settings>>().cloned(),
    ) else {
        return next.call(req).await;
    };
    if keys.previous.is_empty() {
        // No rotation under way: nothing to look at.
        return next.call(req).await;
    }
    let name = settings.cookie_name();
    let resealed = match cookie_value(&req, name) {
        Some(value) if open(&keys.current, name, &value).is_none() => keys
            .previous
            .iter()
            .find_map(|key| open(key, name, &value))
            .and_then(|plain| seal(&keys.current, name, &plain)),
        _ => None,
    };
    let Some(resealed) = resealed else {
        return next.call(req).await;
    };
    // The request goes on with the re-sealed cookie in place of the old one.
    let mut cookies: Vec<String> = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .map(str::to_owned)
        .collect();
    cookies.push(Cookie::new(name, resealed.clone()).encoded().to_string());
    let fresh = Cookie::build(name, resealed)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(settings.cookie_secure)
        .finish();
    if let Ok(value) = header::HeaderValue::from_str(&cookies.join("; ")) {
        req.headers_mut().insert(header::COOKIE, value);
    }
    let mut res = next.call(req).await?;
    let sets_its_own = res.response().cookies().any(|c| c.name() == name);
    if !sets_its_own && let Err(err) = res.response_mut().add_cookie(&fresh) {
        tracing::warn!(error = %err, "could not send a re-sealed session cookie");
    }
    Ok(res)
}
