//! The key that encrypts session cookies: configured, or generated once into the data dir.

use std::{fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use actix_web::cookie::Key;
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
