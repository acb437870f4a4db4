//! One behaviour suite for every session store, in the spirit of actix-session's acceptance
//! suite: the cookie store is flagged as unable to invalidate.

use crate::common;

use std::{collections::HashMap, time::Duration};

use common::{DataDir, PASSWORD, Variant};

use actix_session::storage::{SessionKey, SessionStore};
use actix_web::cookie::time::Duration as Ttl;
use statecart::{
    config::SessionBackend,
    db::Db,
    domain::accounts::{self, Password, Username},
    session::{
        Store,
        state::{LOADED, META, USER},
    },
};

/// What a store loads, without the bookkeeping (key and version) server-side stores add.
async fn load(store: &Store, key: &SessionKey) -> Option<HashMap<String, String>> {
    store.load(key).await.expect("load").map(|mut state| {
        state.remove(LOADED);
        state
    })
}

struct Fixture {
    store: Store,
    db: Db,
    _data: DataDir,
}

async fn fixture(variant: Variant, idle_secs: u64) -> Fixture {
    let (mut settings, data) = common::prepare(variant).await;
    settings.idle_timeout = std::time::Duration::from_secs(idle_secs);
    let db = Db::open(&settings.database_url).await.expect("db");
    db.migrate().await.expect("migrate");
    // The accounts the states below log in, made as the app makes them.
    for id in [1_i64, 2] {
        let name = Username::parse(&format!("user{id}")).expect("username");
        let password = Password::parse(PASSWORD).expect("password");
        let user = accounts::register(&db, &name, password)
            .await
            .expect("register");
        assert_eq!(user.id, id, "a fresh database numbers its users from 1");
    }
    Fixture {
        store: Store::build(&settings, &db).expect("store"),
        db,
        _data: data,
    }
}

/// A login last seen now (a session idle by its own clock is ended when listed).
fn login_state(user_id: i64, sid: &str) -> HashMap<String, String> {
    let now = statecart::domain::now_epoch();
    HashMap::from([
        (
            USER.to_owned(),
            format!(r#"{{"id":{user_id},"name":"user{user_id}"}}"#),
        ),
        (
            META.to_owned(),
            format!(r#"{{"sid":"{sid}","issued_at":{now},"last_seen":{now}}}"#),
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
    assert_eq!(load(store, &key).await, Some(state));

    // An update replaces the state.
    let mut changed = login_state(1, "one");
    changed.insert("flash".into(), r#"{"error":false,"text":"hi"}"#.into());
    let key = store
        .update(key, changed.clone(), &TTL)
        .await
        .expect("update");
    assert_eq!(load(store, &key).await, Some(changed.clone()));

    // A key the store never issued is no session.
    if can_invalidate {
        let unknown = SessionKey::try_from("x".repeat(64)).expect("key");
        assert_eq!(load(store, &unknown).await, None);
    }

    // Deleting forgets, and an update racing the delete does not bring it back.
    store.delete(&key).await.expect("delete");
    let after_delete = load(store, &key).await;
    if can_invalidate {
        assert_eq!(after_delete, None);
        let key = store.update(key, changed, &TTL).await.expect("update");
        assert_eq!(
            load(store, &key).await,
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
    let loaded = load(store, &empty).await;
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
            assert!(load(store, &a).await.is_some());
            assert!(load(store, &b).await.is_none());
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
    assert_eq!(load(&f.store, &key).await, None);
    // Neither a late update nor a late TTL extension brings an expired session back.
    let key = f
        .store
        .update(key, login_state(1, "x"), &TTL)
        .await
        .expect("update");
    f.store.update_ttl(&key, &TTL).await.expect("update_ttl");
    assert_eq!(load(&f.store, &key).await, None, "still expired");
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

/// The write path of parallel requests: a change is saved only onto the version it was made
/// from, and never onto a session that ended.
async fn a_swap_saves_only_onto_the_version_it_was_made_from(variant: Variant) {
    let f = fixture(variant, 60).await;
    let store = &f.store;
    let key = store.save(login_state(1, "v"), &TTL).await.expect("save");
    let (state, v0) = store
        .load_versioned(key.as_ref())
        .await
        .expect("load")
        .expect("live");
    assert_eq!(state, login_state(1, "v"));
    let mut first = state.clone();
    first.insert("cart".into(), r#"{"r":1,"l":[[1,1]]}"#.into());
    let v1 = store
        .swap(key.as_ref(), v0, &first)
        .await
        .expect("swap")
        .expect("saved onto the loaded version");
    assert!(v1 > v0);
    let mut second = state;
    second.insert("cart".into(), r#"{"r":1,"l":[[2,1]]}"#.into());
    assert_eq!(
        store.swap(key.as_ref(), v0, &second).await.expect("swap"),
        None,
        "a change made from an older version is not saved"
    );
    assert_eq!(load(store, &key).await, Some(first.clone()));
    store.delete(&key).await.expect("delete");
    assert_eq!(
        store.swap(key.as_ref(), v1, &first).await.expect("swap"),
        None,
        "a deleted session stays deleted"
    );
    assert_eq!(load(store, &key).await, None);
}

// The contract on one Redis node and on a Redis Cluster alike.
for_each_backend_and_cluster!(suite);
// The cookie backend has no server-side version to compare with: the last answer wins.
for_backends!(a_swap_saves_only_onto_the_version_it_was_made_from => memory, sqlite, postgres, redis, redis_cluster);
// The cookie store keeps nothing on the server that could expire.
for_backends!(sessions_expire_after_the_idle_timeout => memory, sqlite, postgres, redis, redis_cluster);
// Only the database backend promises a table without raw keys.
for_backends!(the_database_never_stores_the_raw_session_key => sqlite, postgres);
