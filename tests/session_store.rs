//! One behaviour suite for every session store, in the spirit of actix-session's acceptance
//! suite: the cookie store is flagged as unable to invalidate.

mod common;

use std::{collections::HashMap, time::Duration};

use common::{DataDir, Variant};

use actix_session::storage::{SessionKey, SessionStore};
use actix_web::cookie::time::Duration as Ttl;
use statecart::{
    config::SessionBackend,
    db::Db,
    session::{
        Store,
        state::{META, USER},
    },
};

struct Fixture {
    store: Store,
    db: Db,
    _data: DataDir,
}

async fn fixture(variant: Variant, idle_secs: u64) -> Fixture {
    let (mut settings, data) = common::prepare(variant).await;
    settings.idle_timeout_secs = idle_secs;
    let db = Db::connect(&settings.database_url).await.expect("db");
    db.migrate().await.expect("migrate");
    for id in [1_i64, 2] {
        sqlx::query(
            "INSERT INTO users (id, username, username_key, password_hash, created_at) VALUES ($1, $2, $2, 'x', 0)",
        )
        .bind(id)
        .bind(format!("user{id}"))
        .execute(&db.pool)
        .await
        .expect("user");
    }
    Fixture {
        store: Store::build(&settings, &db).expect("store"),
        db,
        _data: data,
    }
}

fn login_state(user_id: i64, sid: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            USER.to_owned(),
            format!(r#"{{"id":{user_id},"name":"user{user_id}"}}"#),
        ),
        (
            META.to_owned(),
            format!(r#"{{"sid":"{sid}","issued_at":1,"last_seen":1}}"#),
        ),
    ])
}

const TTL: Ttl = Ttl::seconds(60);

async fn suite(variant: Variant) {
    let f = fixture(variant, 60).await;
    let store = &f.store;
    let can_invalidate = variant.backend() != SessionBackend::Cookie;

    // A saved state loads back.
    let state = login_state(1, "one");
    let key = store.save(state.clone(), &TTL).await.expect("save");
    assert_eq!(store.load(&key).await.expect("load"), Some(state));

    // An update replaces the state.
    let mut changed = login_state(1, "one");
    changed.insert("flash".into(), r#"{"error":false,"text":"hi"}"#.into());
    let key = store
        .update(key, changed.clone(), &TTL)
        .await
        .expect("update");
    assert_eq!(store.load(&key).await.expect("load"), Some(changed.clone()));

    // A key the store never issued is no session.
    if can_invalidate {
        let unknown = SessionKey::try_from("x".repeat(64)).expect("key");
        assert_eq!(store.load(&unknown).await.expect("load"), None);
    }

    // Deleting forgets, and an update racing the delete does not bring it back.
    store.delete(&key).await.expect("delete");
    let after_delete = store.load(&key).await.expect("load");
    if can_invalidate {
        assert_eq!(after_delete, None);
        let key = store.update(key, changed, &TTL).await.expect("update");
        assert_eq!(
            store.load(&key).await.expect("load"),
            None,
            "a deleted session stays deleted"
        );
    } else {
        assert!(
            after_delete.is_some(),
            "the cookie store cannot forget what the client holds"
        );
    }

    // An empty state costs the server nothing.
    let empty = store.save(HashMap::new(), &TTL).await.expect("save");
    let loaded = store.load(&empty).await.expect("load");
    assert!(loaded.is_none_or(|s| s.is_empty()));

    // Listing and revoking, where the store can.
    let a = store.save(login_state(2, "a"), &TTL).await.expect("save");
    let b = store.save(login_state(2, "b"), &TTL).await.expect("save");
    match store.sessions_of(2).await.expect("list") {
        None => assert!(!store.can_list()),
        Some(list) => {
            let mut sids: Vec<_> = list.into_iter().map(|s| s.sid).collect();
            sids.sort();
            assert_eq!(sids, ["a", "b"]);
            assert_eq!(store.revoke_others(2, "a").await.expect("revoke"), 1);
            assert!(store.load(&a).await.expect("load").is_some());
            assert!(store.load(&b).await.expect("load").is_none());
        }
    }
    assert!(store.ping().await);
}

async fn sessions_expire_after_the_idle_timeout(variant: Variant) {
    let f = fixture(variant, 1).await;
    let key = f
        .store
        .save(login_state(1, "x"), &Ttl::seconds(1))
        .await
        .expect("save");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(f.store.load(&key).await.expect("load"), None);
    f.store.housekeeping().await;
    assert_eq!(
        f.store.sessions_of(1).await.expect("list"),
        Some(Vec::new())
    );
}

async fn the_database_never_stores_the_raw_session_key(variant: Variant) {
    let f = fixture(variant, 60).await;
    let key = f.store.save(login_state(1, "k"), &TTL).await.expect("save");
    let stored: Vec<(String,)> = sqlx::query_as("SELECT key_hash FROM sessions")
        .fetch_all(&f.db.pool)
        .await
        .expect("rows");
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0].0, key.as_ref());
    assert_eq!(stored[0].0.len(), 64, "a hex SHA-256");
}

for_each_backend!(suite);
// The cookie store keeps nothing on the server that could expire.
for_backends!(sessions_expire_after_the_idle_timeout => memory, sqlite, postgres, redis);
// Only the database backend promises a table without raw keys.
for_backends!(the_database_never_stores_the_raw_session_key => sqlite, postgres);
