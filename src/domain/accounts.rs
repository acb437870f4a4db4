//! Accounts: validated usernames and passwords, argon2id hashing off the async workers.

use std::{fmt, sync::LazyLock};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};

use crate::db::Db;

/// A username: 3 to 32 letters, digits, `_`, `-` or `.`; unique case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Parses a username as typed (surrounding spaces are ignored).
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let name = input.trim();
        let len = name.chars().count();
        if !(3..=32).contains(&len) {
            return Err("Usernames are 3 to 32 characters long.");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err("Usernames use only letters, digits, and _ - . characters.");
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as the user chose it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-insensitive key that makes names unique.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password of 8 to 128 characters; longer ones are refused, never truncated.
pub struct Password(String);

impl Password {
    /// Checks the length rules.
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        match input.chars().count() {
            0..8 => Err("Passwords are at least 8 characters long."),
            8..=128 => Ok(Self(input.to_owned())),
            _ => Err("Passwords are at most 128 characters long."),
        }
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Primary key.
    pub id: i64,
    /// The name as chosen.
    pub username: String,
}

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Someone has that name already (in any letter case).
    #[error("That username is taken. Please choose another.")]
    Taken,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Hashing failed or was cancelled.
    #[error(transparent)]
    Hashing(#[from] anyhow::Error),
}

/// Argon2id with the OWASP parameters: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a password nobody knows: unknown users cost one verify, like known ones.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_blocking("a password nobody will ever type, used for timing only")
        .unwrap_or_else(|_| String::from("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$invalid"))
});

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|hash| hasher().verify_password(password.as_bytes(), &hash).is_ok())
}

/// Creates an account. Hashing runs on the blocking pool so a burst never stalls other requests.
pub async fn register(
    db: &Db,
    username: &Username,
    password: Password,
) -> Result<User, RegisterError> {
    let phc = tokio::task::spawn_blocking(move || hash_blocking(&password.0))
        .await
        .map_err(|e| anyhow::anyhow!("hashing task failed: {e}"))??;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO users (username, username_key, password_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (username_key) DO NOTHING RETURNING id",
    )
    .bind(username.as_str())
    .bind(username.key())
    .bind(phc)
    .bind(super::now_epoch())
    .fetch_optional(&db.pool)
    .await?;
    match id {
        Some(id) => Ok(User {
            id,
            username: username.as_str().to_owned(),
        }),
        None => Err(RegisterError::Taken),
    }
}

/// Checks a username and password. Unknown users and wrong passwords look exactly alike.
pub async fn authenticate(db: &Db, username: &str, password: &str) -> anyhow::Result<Option<User>> {
    let key = username.trim().to_ascii_lowercase();
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, username, password_hash FROM users WHERE username_key = $1")
            .bind(&key)
            .fetch_optional(&db.pool)
            .await?;
    let (user, phc) = match row {
        Some((id, username, phc)) => (Some(User { id, username }), phc),
        None => (None, DUMMY_HASH.clone()),
    };
    let password = password.to_owned();
    let valid = tokio::task::spawn_blocking(move || verify_blocking(&password, &phc)).await?;
    Ok(user.filter(|_| valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_rules() {
        for ok in ["bob", "Alice_99", "a.b-c", &"x".repeat(32)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            &"x".repeat(33),
            "has space",
            "émile",
            "semi;colon",
            "<script>",
        ] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames_are_unique_case_insensitively() {
        let a = Username::parse("Alice").expect("valid");
        let b = Username::parse("aLiCe").expect("valid");
        assert_eq!(a.key(), b.key());
        assert_eq!(a.as_str(), "Alice");
    }

    #[test]
    fn passwords_are_8_to_128_characters_and_never_truncated() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"p".repeat(128)).is_ok());
        assert!(Password::parse(&"p".repeat(129)).is_err());
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash_blocking("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_blocking("correct horse", &phc));
        assert!(!verify_blocking("correct horsE", &phc));
        assert!(!verify_blocking("correct horse", "not a hash"));
    }
}
