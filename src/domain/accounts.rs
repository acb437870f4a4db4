//! Accounts: validated usernames and passwords, argon2id hashing off the async workers, a
//! bounded number of hashes at once, and the admin role.

use std::{
    cell::RefCell,
    fmt,
    num::NonZeroUsize,
    sync::{Arc, LazyLock, Mutex, PoisonError, mpsc},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{
        PasswordHasher,
        phc::{Output, ParamsString, PasswordHash, Salt},
    },
};

use tokio::sync::Semaphore;

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

/// Most bytes of a password anyone may send: longer ones are refused before any hashing.
/// (128 characters of four bytes each fit twice over.)
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A password of 8 to 128 characters; longer ones are refused, never truncated.
pub struct Password(String);

impl Password {
    /// Checks the length rules.
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        if input.len() > MAX_PASSWORD_BYTES {
            return Err("Passwords are at most 128 characters long.");
        }
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
    /// Hashing or the database failed, as they can for a login.
    #[error(transparent)]
    Failed(#[from] AuthError),
}

/// Why a login could not be checked (a wrong password is not an error: it is `Ok(None)`), or
/// an account not created for a reason other than its name.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Every hashing slot stayed busy for [`HASH_WAIT`].
    #[error(transparent)]
    Busy(#[from] Busy),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Hashing failed or was cancelled.
    #[error(transparent)]
    Hashing(#[from] anyhow::Error),
}

/// Every hashing slot stayed busy: the server is hashing as many passwords as it has cores.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("every password-hashing slot is busy")]
pub struct Busy;

/// How long a login or registration waits for a hashing slot before it is answered 503.
pub const HASH_WAIT: Duration = Duration::from_secs(2);

/// Bounds the hashes in flight. Each argon2id hash holds 19 MiB while it runs, and the
/// blocking pool would run hundreds at once: a flood of logins would take gigabytes. With one
/// slot per core, hashing uses the CPU as fully as before and memory stays at a few hashes.
///
/// The hashes run on the gate's own threads, one per slot, not on the blocking pool: glibc
/// keeps freed memory in the allocation arena of the thread that used it, and blocking-pool
/// threads come and go across every worker's pool, each leaving 19 MiB or more behind (128
/// parallel logins left 750 MB resident even with the slots bounded). A fixed set of threads
/// reuses the same few buffers.
pub struct HashGate {
    slots: Arc<Semaphore>,
    wait: Duration,
    jobs: mpsc::Sender<Job>,
    threads: usize,
}

/// One hash to run on a gate thread.
type Job = Box<dyn FnOnce() + Send>;

impl HashGate {
    /// A gate of `slots` hashes at once on as many threads, each caller waiting at most
    /// `wait` for a slot.
    pub fn new(slots: usize, wait: Duration) -> Self {
        let slots = slots.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..slots)
            .filter(|i| {
                let queue = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("password-hash-{i}"))
                    .spawn(move || run_jobs(&queue))
                    .inspect_err(|err| tracing::error!(error = %err, "no password-hashing thread"))
                    .is_ok()
            })
            .count();
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            wait,
            jobs,
            threads,
        }
    }

    /// Runs `work` on a gate thread once a slot is free. The slot goes with the work, so a
    /// request that gives up (the client left) still holds it until the hash ends.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<anyhow::Result<T>, Busy> {
        let queued = std::time::Instant::now();
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| Busy)
            .and_then(|acquired| acquired.map_err(|_| Busy))
            .inspect_err(|_| crate::metrics::hash_queue_wait(queued.elapsed()))?;
        if self.threads == 0 {
            return Ok(Err(anyhow::anyhow!(
                "no password-hashing thread is running"
            )));
        }
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The queue wait ends when a gate thread picks the hash up, not at the permit.
            let waited = queued.elapsed();
            let out = work();
            drop(permit);
            let _ = done.send((waited, out));
        });
        if self.jobs.send(job).is_err() {
            return Ok(Err(anyhow::anyhow!(
                "the password-hashing threads are gone"
            )));
        }
        Ok(result
            .await
            .map(|(waited, out)| {
                crate::metrics::hash_queue_wait(waited);
                out
            })
            .map_err(|_| anyhow::anyhow!("a password hash failed")))
    }
}

/// A gate thread: runs jobs until the gate is dropped. A job that panics fails its own
/// request (its result channel closes) and the thread goes on.
fn run_jobs(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = match queue.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// The gate every password hash of this process goes through: one slot per core.
static GATE: LazyLock<HashGate> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
    HashGate::new(cores, HASH_WAIT)
});

/// Argon2id with the OWASP parameters: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a password nobody knows: unknown users cost one verify, like known ones. The
/// salt is fixed, so no random source can fail here; an error would be a wrong constant, and
/// falling back to a cheap fake hash would let timing tell unknown names from known ones.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hasher()
        .hash_password_with_salt(
            b"a password nobody will ever type, used for timing only",
            b"statecart-dummy-salt",
        )
        .map(|h| h.to_string())
        .expect("constant password and salt hash")
});

/// Computes the dummy hash now. Called at start-up, so that the first login of an unknown name
/// does not pay a whole argon2 hash on a request's worker thread, outside the hashing gate.
pub fn prepare_hashing() {
    LazyLock::force(&DUMMY_HASH);
}

thread_local! {
    /// This thread's argon2 working memory, allocated on its first hash and reused by every
    /// later one. Only the gate's few threads hash, so the process holds one such buffer per
    /// core (19 MiB each), however many logins come.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs one argon2 computation in this thread's reused memory.
fn hash_into(argon: &Argon2<'_>, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    MEMORY.with_borrow_mut(|memory| {
        let blocks = argon.params().block_count();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        argon
            .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
            .is_ok()
    })
}

/// A new PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) for `password`.
fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let argon = hasher();
    let salt: [u8; Salt::RECOMMENDED_LENGTH] = rand::random();
    let mut out = [0_u8; Params::DEFAULT_OUTPUT_LEN];
    if !hash_into(&argon, password.as_bytes(), &salt, &mut out) {
        anyhow::bail!("hashing a password failed");
    }
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params())
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("output: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc`, with the parameters `phc` names. The
/// comparison of the outputs takes the same time wherever they differ.
fn verify_blocking(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(hash.algorithm.as_str()),
        Params::try_from(&hash),
        hash.salt,
        hash.hash,
    ) else {
        return false;
    };
    let Ok(version) = hash.version.map_or(Ok(Version::V0x13), Version::try_from) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0_u8; expected.len()];
    hash_into(&argon, password.as_bytes(), salt.as_ref(), &mut out)
        && Output::new(&out).is_ok_and(|actual| actual == expected)
}

/// Creates an account. Hashing runs on the gate's threads so a burst never stalls other requests.
pub async fn register(
    db: &Db,
    username: &Username,
    password: Password,
) -> Result<User, RegisterError> {
    match insert_account(db, username, password).await? {
        Some(id) => Ok(User {
            id,
            username: username.as_str().to_owned(),
        }),
        None => Err(RegisterError::Taken),
    }
}

/// The new account's id, or `None` when the name is taken.
async fn insert_account(
    db: &Db,
    username: &Username,
    password: Password,
) -> Result<Option<i64>, AuthError> {
    let phc = GATE.run(move || hash_blocking(&password.0)).await???;
    let id = sqlx::query_scalar(
        "INSERT INTO users (username, username_key, password_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (username_key) DO NOTHING RETURNING id",
    )
    .bind(username.as_str())
    .bind(username.key())
    .bind(phc)
    .bind(super::now_epoch())
    .fetch_optional(&db.pool)
    .await?;
    Ok(id)
}

/// Checks a username and password. Unknown users and wrong passwords look exactly alike.
///
/// A name no account can have (wrong characters, control characters, too long) or a password
/// over [`MAX_PASSWORD_BYTES`] fails at once, before any query or hash: the answer depends on
/// the input alone, so it tells nothing about which accounts exist.
pub async fn authenticate(
    db: &Db,
    username: &str,
    password: &str,
) -> Result<Option<User>, AuthError> {
    let Ok(name) = Username::parse(username) else {
        return Ok(None);
    };
    if password.len() > MAX_PASSWORD_BYTES {
        return Ok(None);
    }
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, username, password_hash FROM users WHERE username_key = $1")
            .bind(name.key())
            .fetch_optional(&db.pool)
            .await?;
    let (user, phc) = match row {
        Some((id, username, phc)) => (Some(User { id, username }), phc),
        None => (None, DUMMY_HASH.clone()),
    };
    let password = password.to_owned();
    let valid = GATE.run(move || verify_blocking(&password, &phc)).await??;
    Ok(user.filter(|_| valid))
}

/// Whether the account `user_id` holds the admin role.
pub async fn is_admin(db: &Db, user_id: i64) -> Result<bool, sqlx::Error> {
    let role: Option<i64> = sqlx::query_scalar("SELECT is_admin FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(role == Some(1))
}

/// Grants or revokes the admin role of an existing account; `Ok(None)` when there is no such
/// account, else the name as registered.
pub async fn set_admin(
    db: &Db,
    username: &Username,
    admin: bool,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("UPDATE users SET is_admin = $1 WHERE username_key = $2 RETURNING username")
        .bind(i64::from(admin))
        .bind(username.key())
        .fetch_optional(&db.pool)
        .await
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
    fn passwords_over_the_byte_cap_are_refused_before_counting() {
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert!(Password::parse(&"p".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }

    #[test]
    fn the_dummy_hash_is_a_real_hash_with_the_real_parameters() {
        assert!(DUMMY_HASH.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(PasswordHash::new(&DUMMY_HASH).is_ok());
        assert!(verify_blocking(
            "a password nobody will ever type, used for timing only",
            &DUMMY_HASH
        ));
    }

    #[tokio::test]
    async fn a_full_gate_answers_busy_instead_of_queueing_forever() {
        let gate = HashGate::new(1, Duration::from_millis(50));
        let held = Arc::clone(&gate.slots).acquire_owned().await.expect("slot");
        assert!(gate.run(|| 1).await.is_err(), "busy while the slot is held");
        drop(held);
        assert_eq!(gate.run(|| 1).await.ok().and_then(Result::ok), Some(1));
    }

    #[test]
    fn hashes_in_reused_memory_agree_with_the_library() {
        use argon2::password_hash::PasswordVerifier as _;
        // Ours verifies the library's hashes (accounts made before) ...
        let library = hasher()
            .hash_password(b"correct horse")
            .expect("hash")
            .to_string();
        assert!(verify_blocking("correct horse", &library));
        assert!(!verify_blocking("correct horsE", &library));
        // ... and the library verifies ours, several in a row on one thread's memory.
        for password in ["correct horse", "another one", "a third"] {
            let ours = hash_blocking(password).expect("hash");
            let parsed = PasswordHash::new(&ours).expect("phc");
            assert!(
                hasher()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            );
        }
        // A hash with other parameters is checked with its own.
        let light = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"light")
        .expect("hash")
        .to_string();
        assert!(verify_blocking("light", &light));
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
