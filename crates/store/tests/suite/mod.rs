//! Engine-independent assertions: every engine runs [`test_suite`] and [`two_handles`].
//!
//! Each check makes its own account, so they can share one database.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_store::{
    AuditRecord, EventBatch, EventFilter, EventQuery, IdentityType, KeyStatus, Store, StoreError,
    Tag,
};

/// Runs every engine-independent check on `store` (an empty or shared database).
pub(crate) async fn test_suite(store: &Store) {
    accounts(store).await;
    users_crud(store).await;
    users_case_insensitive(store).await;
    users_pagination(store).await;
    user_tags(store).await;
    access_keys_lifecycle(store).await;
    access_keys_root_and_limits(store).await;
    access_key_with_given_id(store).await;
    rename_keeps_keys(store).await;
    usage_coalescing(store).await;
    aliases(store).await;
    change_stamp_grows(store).await;
    concurrent_limits_one_handle(store).await;
    audit_events(store).await;
    audit_batches_overlap(store).await;
    audit_batch_buffers_are_reused(store).await;
    unsynced_batches_are_stored_and_read_back(store).await;
    key_lookup_with_owner(store).await;
    bulk_users_with_keys(store).await;
}

async fn new_account(store: &Store) -> String {
    let name = format!("acct-{}", keyward_ids::new_account_id());
    store.create_account(&name, None).await.unwrap().id
}

fn assert_err<T: std::fmt::Debug>(r: Result<T, StoreError>, code: &str, message: &str) {
    match r {
        Err(e) => {
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(e.to_string(), message);
        }
        Ok(v) => panic!("expected {code}, got Ok({v:?})"),
    }
}

async fn accounts(store: &Store) {
    let a = store
        .create_account("alpha-co", Some("123456789012"))
        .await
        .unwrap();
    assert_eq!(a.id, "123456789012");
    assert_eq!(a.name, "alpha-co");
    assert_eq!(
        store.get_account("123456789012").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.get_account_by_name("alpha-co").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.get_account("999999999999").await.unwrap(), None);
    assert_eq!(store.get_account_by_name("nobody").await.unwrap(), None);
    assert_err(
        store.create_account("other", Some("123456789012")).await,
        "EntityAlreadyExists",
        "Account with id 123456789012 already exists.",
    );
    assert_err(
        store.create_account("alpha-co", None).await,
        "EntityAlreadyExists",
        "Account with name alpha-co already exists.",
    );
    assert!(matches!(
        store.create_account("x", Some("12345")).await,
        Err(StoreError::InvalidInput(_))
    ));
    let b = store.create_account("beta-co", None).await.unwrap();
    assert!(keyward_ids::is_account_id(&b.id));
    let all = store.list_accounts().await.unwrap();
    assert!(all.contains(&a) && all.contains(&b));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    // Timestamps are stored in milliseconds.
    let ms = a.created.duration_since(UNIX_EPOCH).unwrap().as_nanos() % 1_000_000;
    assert_eq!(ms, 0);
}

async fn users_crud(store: &Store) {
    let acct = new_account(store).await;
    let tags = [Tag::new("team", "core")];
    let u = store
        .create_user(&acct, "bob", "/eng/", &tags)
        .await
        .unwrap();
    assert_eq!(u.name, "bob");
    assert_eq!(u.path, "/eng/");
    assert_eq!(u.arn, format!("arn:aws:iam::{acct}:user/eng/bob"));
    assert!(
        u.user_id.starts_with("AIDA") && u.user_id.len() == 21,
        "{}",
        u.user_id
    );
    assert_eq!(
        keyward_ids::account_of_key_id(&u.user_id[..20]),
        Some(acct.clone())
    );
    assert_eq!(u.tags, tags);
    assert_eq!(store.get_user(&acct, "bob").await.unwrap(), Some(u.clone()));
    assert_eq!(store.get_user(&acct, "alice").await.unwrap(), None);

    let root_user = store.create_user(&acct, "carol", "/", &[]).await.unwrap();
    assert_eq!(root_user.arn, format!("arn:aws:iam::{acct}:user/carol"));

    assert_err(
        store.create_user(&acct, "bob", "/", &[]).await,
        "EntityAlreadyExists",
        "User with name bob already exists.",
    );
    assert_err(
        store.create_user("000000000000", "bob", "/", &[]).await,
        "NoSuchEntity",
        "The account with id 000000000000 cannot be found.",
    );
    assert!(matches!(
        store.create_user(&acct, "bad name", "/", &[]).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.create_user(&acct, "dave", "no-slash", &[]).await,
        Err(StoreError::InvalidInput(_))
    ));

    // Move and rename.
    let moved = store
        .update_user(&acct, "bob", None, Some("/ops/"))
        .await
        .unwrap();
    assert_eq!(moved.arn, format!("arn:aws:iam::{acct}:user/ops/bob"));
    assert_eq!(moved.user_id, u.user_id);
    let renamed = store
        .update_user(&acct, "bob", Some("robert"), None)
        .await
        .unwrap();
    assert_eq!(renamed.name, "robert");
    assert_eq!(renamed.path, "/ops/");
    assert_eq!(renamed.user_id, u.user_id);
    assert_eq!(renamed.tags, tags);
    assert_eq!(store.get_user(&acct, "bob").await.unwrap(), None);
    assert_err(
        store.update_user(&acct, "bob", Some("x"), None).await,
        "NoSuchEntity",
        "The user with name bob cannot be found.",
    );
    assert_err(
        store
            .update_user(&acct, "robert", Some("Carol"), None)
            .await,
        "EntityAlreadyExists",
        "User with name Carol already exists.",
    );

    // Delete.
    store.delete_user(&acct, "carol").await.unwrap();
    assert_eq!(store.get_user(&acct, "carol").await.unwrap(), None);
    assert_err(
        store.delete_user(&acct, "carol").await,
        "NoSuchEntity",
        "The user with name carol cannot be found.",
    );
    let (k, _) = store
        .create_access_key(&acct, Some("robert"))
        .await
        .unwrap();
    assert_err(
        store.delete_user(&acct, "robert").await,
        "DeleteConflict",
        "Cannot delete entity, must delete access keys first.",
    );
    store
        .delete_access_key(&acct, Some("robert"), &k.key_id)
        .await
        .unwrap();
    store.delete_user(&acct, "robert").await.unwrap();
    // The name is free again, and the new user is a new identity.
    let again = store.create_user(&acct, "robert", "/", &[]).await.unwrap();
    assert_ne!(again.user_id, u.user_id);
    assert!(
        again.tags.is_empty(),
        "tags of a deleted user must not come back"
    );
}

async fn users_case_insensitive(store: &Store) {
    let acct = new_account(store).await;
    let u = store.create_user(&acct, "Alice", "/", &[]).await.unwrap();
    assert_eq!(
        store.get_user(&acct, "alice").await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(
        store.get_user(&acct, "ALICE").await.unwrap(),
        Some(u.clone())
    );
    assert_err(
        store.create_user(&acct, "aLiCe", "/", &[]).await,
        "EntityAlreadyExists",
        "User with name aLiCe already exists.",
    );
    // Changing only the case of one's own name is allowed.
    let r = store
        .update_user(&acct, "alice", Some("ALICE"), None)
        .await
        .unwrap();
    assert_eq!(r.name, "ALICE");
    assert_eq!(r.arn, format!("arn:aws:iam::{acct}:user/ALICE"));
    // The same name in another account is another user.
    let other = new_account(store).await;
    store.create_user(&other, "alice", "/", &[]).await.unwrap();
    // Keys made with another case belong to the same user, shown with its stored name.
    let (k, _) = store.create_access_key(&acct, Some("alice")).await.unwrap();
    assert_eq!(k.user_name.as_deref(), Some("ALICE"));
    assert_eq!(
        store.list_access_keys(&acct, Some("Alice")).await.unwrap(),
        vec![k.clone()]
    );
    store
        .delete_access_key(&acct, Some("aLIce"), &k.key_id)
        .await
        .unwrap();
}

async fn users_pagination(store: &Store) {
    let acct = new_account(store).await;
    let names = [
        "delta", "Alpha", "charlie", "bravo", "Echo", "foxtrot", "golf",
    ];
    for (i, n) in names.iter().enumerate() {
        let path = if i % 2 == 0 { "/even/" } else { "/odd/" };
        store.create_user(&acct, n, path, &[]).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_users(&acct, "/", marker.as_deref(), 3)
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|u| u.name.clone()));
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ["Alpha", "bravo", "charlie", "delta", "Echo", "foxtrot", "golf"]
    );
    // Exactly one full page: no marker.
    let all = store.list_users(&acct, "", None, 7).await.unwrap();
    assert_eq!(all.items.len(), 7);
    assert_eq!(all.next_marker, None);
    // Path prefix.
    let even: Vec<_> = store
        .list_users(&acct, "/even/", None, 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(even, ["charlie", "delta", "Echo", "golf"]);
    assert!(store
        .list_users(&acct, "/none/", None, 100)
        .await
        .unwrap()
        .items
        .is_empty());
    // A marker stays valid when the user it points at is deleted.
    let first = store.list_users(&acct, "/", None, 2).await.unwrap();
    store.delete_user(&acct, "bravo").await.unwrap();
    let rest = store
        .list_users(&acct, "/", first.next_marker.as_deref(), 100)
        .await
        .unwrap();
    assert_eq!(rest.items[0].name, "charlie");
    // Bad input.
    assert!(matches!(
        store
            .list_users(&acct, "/", Some("zz-not-a-marker"), 10)
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.list_users(&acct, "/", None, 0).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.list_users(&acct, "/", None, 1001).await,
        Err(StoreError::InvalidInput(_))
    ));
    // Another account's users are not listed.
    let other = new_account(store).await;
    assert!(store
        .list_users(&other, "/", None, 100)
        .await
        .unwrap()
        .items
        .is_empty());
}

async fn user_tags(store: &Store) {
    let acct = new_account(store).await;
    store
        .create_user(&acct, "tagged", "/", &[Tag::new("Env", "dev")])
        .await
        .unwrap();
    store
        .tag_user(
            &acct,
            "tagged",
            &[Tag::new("env", "prod"), Tag::new("owner", "me")],
        )
        .await
        .unwrap();
    let tags = store.list_user_tags(&acct, "TAGGED").await.unwrap();
    assert_eq!(tags, vec![Tag::new("env", "prod"), Tag::new("owner", "me")]);
    store
        .untag_user(&acct, "tagged", &["ENV".into(), "absent".into()])
        .await
        .unwrap();
    assert_eq!(
        store.list_user_tags(&acct, "tagged").await.unwrap(),
        vec![Tag::new("owner", "me")]
    );
    assert_err(
        store.list_user_tags(&acct, "ghost").await,
        "NoSuchEntity",
        "The user with name ghost cannot be found.",
    );
    assert_err(
        store.tag_user(&acct, "ghost", &[Tag::new("a", "b")]).await,
        "NoSuchEntity",
        "The user with name ghost cannot be found.",
    );
    assert!(matches!(
        store
            .tag_user(&acct, "tagged", &[Tag::new("a", "1"), Tag::new("A", "2")])
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    // 50 tags at most, all or nothing.
    let many: Vec<Tag> = (0..49).map(|i| Tag::new(format!("k{i}"), "v")).collect();
    store.tag_user(&acct, "tagged", &many).await.unwrap();
    assert_eq!(
        store.list_user_tags(&acct, "tagged").await.unwrap().len(),
        50
    );
    store
        .tag_user(&acct, "tagged", &[Tag::new("K0", "replaced")])
        .await
        .unwrap();
    assert_err(
        store
            .tag_user(&acct, "tagged", &[Tag::new("one-more", "v")])
            .await,
        "LimitExceeded",
        "Cannot exceed quota for TagsPerUser: 50",
    );
    let after = store.list_user_tags(&acct, "tagged").await.unwrap();
    assert_eq!(after.len(), 50);
    assert!(after.contains(&Tag::new("K0", "replaced")));
    let too_many: Vec<Tag> = (0..51).map(|i| Tag::new(format!("k{i}"), "v")).collect();
    assert!(matches!(
        store.create_user(&acct, "crowded", "/", &too_many).await,
        Err(StoreError::LimitExceeded(_))
    ));
}

async fn access_keys_lifecycle(store: &Store) {
    let acct = new_account(store).await;
    store.create_user(&acct, "kim", "/", &[]).await.unwrap();
    let (k, secret) = store.create_access_key(&acct, Some("kim")).await.unwrap();
    assert!(k.key_id.starts_with("AKIA") && k.key_id.len() == 20);
    assert_eq!(
        keyward_ids::account_of_key_id(&k.key_id),
        Some(acct.clone())
    );
    assert!(keyward_ids::is_well_formed_secret(secret.expose()));
    assert_eq!(k.status, KeyStatus::Active);
    assert_eq!(k.user_name.as_deref(), Some("kim"));
    assert_eq!(k.account_id, acct);

    let (found, s) = store.get_access_key(&k.key_id).await.unwrap().unwrap();
    assert_eq!(found, k);
    assert_eq!(s.expose(), secret.expose());
    assert!(store
        .get_access_key("AKIAAAAAAAAAAAAAAAAA")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get_access_key("not even an id")
        .await
        .unwrap()
        .is_none());

    assert_eq!(
        store.list_access_keys(&acct, Some("kim")).await.unwrap(),
        vec![k.clone()]
    );
    assert!(store
        .list_access_keys(&acct, None)
        .await
        .unwrap()
        .is_empty());
    assert_err(
        store.list_access_keys(&acct, Some("ghost")).await,
        "NoSuchEntity",
        "The user with name ghost cannot be found.",
    );
    assert_err(
        store.create_access_key(&acct, Some("ghost")).await,
        "NoSuchEntity",
        "The user with name ghost cannot be found.",
    );

    store
        .update_access_key_status(&acct, Some("kim"), &k.key_id, KeyStatus::Inactive)
        .await
        .unwrap();
    let (found, _) = store.get_access_key(&k.key_id).await.unwrap().unwrap();
    assert_eq!(found.status, KeyStatus::Inactive);
    store
        .update_access_key_status(&acct, Some("kim"), &k.key_id, KeyStatus::Active)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_access_key(&k.key_id)
            .await
            .unwrap()
            .unwrap()
            .0
            .status,
        KeyStatus::Active
    );

    // The key is only reachable through its owner.
    let not_found = format!("The Access Key with id {} cannot be found.", k.key_id);
    store.create_user(&acct, "lee", "/", &[]).await.unwrap();
    assert_err(
        store
            .update_access_key_status(&acct, Some("lee"), &k.key_id, KeyStatus::Inactive)
            .await,
        "NoSuchEntity",
        &not_found,
    );
    assert_err(
        store
            .update_access_key_status(&acct, None, &k.key_id, KeyStatus::Inactive)
            .await,
        "NoSuchEntity",
        &not_found,
    );
    let other = new_account(store).await;
    assert_err(
        store.delete_access_key(&other, None, &k.key_id).await,
        "NoSuchEntity",
        &not_found,
    );
    assert_err(
        store.delete_access_key(&acct, Some("lee"), &k.key_id).await,
        "NoSuchEntity",
        &not_found,
    );
    assert_eq!(
        store
            .get_access_key(&k.key_id)
            .await
            .unwrap()
            .unwrap()
            .0
            .status,
        KeyStatus::Active
    );

    store
        .delete_access_key(&acct, Some("kim"), &k.key_id)
        .await
        .unwrap();
    assert!(store.get_access_key(&k.key_id).await.unwrap().is_none());
    assert!(store
        .get_access_key_last_used(&k.key_id)
        .await
        .unwrap()
        .is_none());
    assert_err(
        store.delete_access_key(&acct, Some("kim"), &k.key_id).await,
        "NoSuchEntity",
        &not_found,
    );
}

async fn access_keys_root_and_limits(store: &Store) {
    let acct = new_account(store).await;
    store.create_user(&acct, "max", "/", &[]).await.unwrap();
    let (r1, _) = store.create_access_key(&acct, None).await.unwrap();
    assert_eq!(r1.user_name, None);
    let (r2, _) = store.create_access_key(&acct, None).await.unwrap();
    store
        .update_access_key_status(&acct, None, &r2.key_id, KeyStatus::Inactive)
        .await
        .unwrap();
    // Inactive keys count.
    assert_err(
        store.create_access_key(&acct, None).await,
        "LimitExceeded",
        "Cannot exceed quota for AccessKeysPerUser: 2",
    );
    // The root's keys and a user's keys are counted separately.
    let (u1, _) = store.create_access_key(&acct, Some("max")).await.unwrap();
    let (u2, _) = store.create_access_key(&acct, Some("max")).await.unwrap();
    assert_err(
        store.create_access_key(&acct, Some("max")).await,
        "LimitExceeded",
        "Cannot exceed quota for AccessKeysPerUser: 2",
    );
    let mut root_keys: Vec<_> = store.list_access_keys(&acct, None).await.unwrap();
    root_keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    let mut expect = vec![r1.key_id.clone(), r2.key_id.clone()];
    expect.sort();
    assert_eq!(
        root_keys
            .iter()
            .map(|k| k.key_id.clone())
            .collect::<Vec<_>>(),
        expect
    );
    assert_eq!(
        store
            .list_access_keys(&acct, Some("max"))
            .await
            .unwrap()
            .len(),
        2
    );
    // Deleting one frees a slot.
    store
        .delete_access_key(&acct, Some("max"), &u1.key_id)
        .await
        .unwrap();
    store.create_access_key(&acct, Some("max")).await.unwrap();
    let _ = u2;
    // An unknown account has no root.
    assert_err(
        store.create_access_key("000000000001", None).await,
        "NoSuchEntity",
        "The account with id 000000000001 cannot be found.",
    );
}

async fn access_key_with_given_id(store: &Store) {
    let acct = new_account(store).await;
    let id = keyward_ids::new_access_key_id(keyward_ids::KeyKind::LongTerm, &acct);
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let k = store
        .create_access_key_with(&acct, None, &id, secret)
        .await
        .unwrap();
    assert_eq!(k.key_id, id);
    let (_, s) = store.get_access_key(&id).await.unwrap().unwrap();
    assert_eq!(s.expose(), secret);
    assert_err(
        store.create_access_key_with(&acct, None, &id, secret).await,
        "EntityAlreadyExists",
        &format!("Access key with id {id} already exists."),
    );
    // The AWS documentation's example id does not encode an account but is well formed.
    let other = new_account(store).await;
    if store
        .get_access_key("AKIAIOSFODNN7EXAMPLE")
        .await
        .unwrap()
        .is_none()
    {
        store
            .create_access_key_with(&other, None, "AKIAIOSFODNN7EXAMPLE", secret)
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .create_access_key_with(&acct, None, "ASIAIOSFODNN7EXAMPLE", secret)
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store
            .create_access_key_with(&acct, None, "AKIA-short", secret)
            .await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.create_access_key_with(&acct, None, &id, "").await,
        Err(StoreError::InvalidInput(_))
    ));
}

async fn rename_keeps_keys(store: &Store) {
    let acct = new_account(store).await;
    store
        .create_user(&acct, "old-name", "/", &[])
        .await
        .unwrap();
    let (k, secret) = store
        .create_access_key(&acct, Some("old-name"))
        .await
        .unwrap();
    store
        .update_user(&acct, "old-name", Some("new-name"), None)
        .await
        .unwrap();
    let (found, s) = store.get_access_key(&k.key_id).await.unwrap().unwrap();
    assert_eq!(found.user_name.as_deref(), Some("new-name"));
    assert_eq!(s.expose(), secret.expose());
    let listed = store
        .list_access_keys(&acct, Some("new-name"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, k.key_id);
    assert_err(
        store.list_access_keys(&acct, Some("old-name")).await,
        "NoSuchEntity",
        "The user with name old-name cannot be found.",
    );
    // A new user under the old name does not inherit the keys.
    store
        .create_user(&acct, "old-name", "/", &[])
        .await
        .unwrap();
    assert!(store
        .list_access_keys(&acct, Some("old-name"))
        .await
        .unwrap()
        .is_empty());
    store
        .update_access_key_status(&acct, Some("new-name"), &k.key_id, KeyStatus::Inactive)
        .await
        .unwrap();
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

async fn usage_coalescing(store: &Store) {
    let acct = new_account(store).await;
    let (k, _) = store.create_access_key(&acct, None).await.unwrap();
    let (_, never) = store
        .get_access_key_last_used(&k.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(never, None);

    store.record_key_use(&k.key_id, at(1_700_000_100), "s3", "eu-west-1");
    store.record_key_use(&k.key_id, at(1_700_000_050), "iam", "us-east-1"); // older: ignored
    store.record_key_use(&k.key_id, at(1_700_000_200), "sts", "us-west-2");
    // Pending, merged into the answer.
    let (_, last) = store
        .get_access_key_last_used(&k.key_id)
        .await
        .unwrap()
        .unwrap();
    let last = last.unwrap();
    assert_eq!(
        (last.when, last.service.as_str(), last.region.as_str()),
        (at(1_700_000_200), "sts", "us-west-2")
    );

    store.flush_key_usage().await.unwrap();
    let (_, last) = store
        .get_access_key_last_used(&k.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.unwrap().when, at(1_700_000_200));

    // An older use flushed later does not overwrite a newer stored one.
    store.record_key_use(&k.key_id, at(1_700_000_150), "iam", "us-east-1");
    store.flush_key_usage().await.unwrap();
    let (_, last) = store
        .get_access_key_last_used(&k.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.unwrap().service, "sts");

    // A newer pending use wins over the stored one before any flush.
    store.record_key_use(&k.key_id, at(1_700_000_300), "s3", "ap-south-1");
    let (_, last) = store
        .get_access_key_last_used(&k.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.unwrap().region, "ap-south-1");
    store.flush_key_usage().await.unwrap();

    // Uses of unknown or deleted keys are dropped silently at flush.
    store.record_key_use("AKIAUNKNOWNKEY234567", at(1_700_000_000), "s3", "x");
    let (k2, _) = store.create_access_key(&acct, None).await.unwrap();
    store.record_key_use(&k2.key_id, at(1_700_000_000), "s3", "x");
    store
        .delete_access_key(&acct, None, &k2.key_id)
        .await
        .unwrap();
    store.flush_key_usage().await.unwrap();
    assert!(store
        .get_access_key_last_used(&k2.key_id)
        .await
        .unwrap()
        .is_none());
    // Flushing nothing is fine.
    store.flush_key_usage().await.unwrap();
}

async fn aliases(store: &Store) {
    let a = new_account(store).await;
    let b = new_account(store).await;
    let alias = format!("corp-{}", &a[..6]);
    assert!(store.list_account_aliases(&a).await.unwrap().is_empty());
    store.create_account_alias(&a, &alias).await.unwrap();
    assert_eq!(
        store.list_account_aliases(&a).await.unwrap(),
        vec![alias.clone()]
    );
    // Idempotent for the same account.
    store.create_account_alias(&a, &alias).await.unwrap();
    // Globally unique.
    assert_err(
        store.create_account_alias(&b, &alias).await,
        "EntityAlreadyExists",
        &format!("The account alias {alias} already exists."),
    );
    // One per account: a new alias replaces the old one.
    let second = format!("{alias}-two");
    store.create_account_alias(&a, &second).await.unwrap();
    assert_eq!(
        store.list_account_aliases(&a).await.unwrap(),
        vec![second.clone()]
    );
    // The released alias may now be taken by another account.
    store.create_account_alias(&b, &alias).await.unwrap();
    assert_err(
        store.delete_account_alias(&a, &alias).await,
        "NoSuchEntity",
        &format!("The account alias {alias} cannot be found."),
    );
    store.delete_account_alias(&a, &second).await.unwrap();
    assert!(store.list_account_aliases(&a).await.unwrap().is_empty());
    assert!(matches!(
        store.create_account_alias(&a, "Bad--Alias").await,
        Err(StoreError::InvalidInput(_))
    ));
    assert_err(
        store
            .create_account_alias("000000000002", "free-alias-x")
            .await,
        "NoSuchEntity",
        "The account with id 000000000002 cannot be found.",
    );
}

async fn change_stamp_grows(store: &Store) {
    let acct = new_account(store).await;
    store.create_user(&acct, "stamp", "/", &[]).await.unwrap();
    let mut last = store.change_stamp().await.unwrap();
    let (k, _) = store.create_access_key(&acct, Some("stamp")).await.unwrap();
    let mut check = |now: u64, what: &str| {
        assert!(
            now > last,
            "stamp did not grow after {what}: {now} <= {last}"
        );
        last = now;
    };
    check(store.change_stamp().await.unwrap(), "create key");
    store
        .update_access_key_status(&acct, Some("stamp"), &k.key_id, KeyStatus::Inactive)
        .await
        .unwrap();
    check(store.change_stamp().await.unwrap(), "deactivate");
    store
        .update_user(&acct, "stamp", Some("stamp2"), None)
        .await
        .unwrap();
    check(store.change_stamp().await.unwrap(), "rename");
    store
        .delete_access_key(&acct, Some("stamp2"), &k.key_id)
        .await
        .unwrap();
    check(store.change_stamp().await.unwrap(), "delete key");
    store.delete_user(&acct, "stamp2").await.unwrap();
    check(store.change_stamp().await.unwrap(), "delete user");
    // Failed writes and reads do not move it.
    let before = store.change_stamp().await.unwrap();
    let _ = store.delete_user(&acct, "stamp2").await;
    let _ = store.get_user(&acct, "stamp2").await;
    assert_eq!(store.change_stamp().await.unwrap(), before);
}

/// Many tasks racing on one handle never get past the limits.
async fn concurrent_limits_one_handle(store: &Store) {
    race(store, store).await;
}

/// Two handles on the same database (as two processes would have) never get past the limits, and
/// each sees the other's writes at once.
pub(crate) async fn two_handles(a: &Store, b: &Store) {
    let acct = a
        .create_account(&format!("two-{}", keyward_ids::new_account_id()), None)
        .await
        .unwrap();
    assert_eq!(b.get_account(&acct.id).await.unwrap(), Some(acct.clone()));
    let (k, s) = a.create_access_key(&acct.id, None).await.unwrap();
    let (kb, sb) = b.get_access_key(&k.key_id).await.unwrap().unwrap();
    assert_eq!((kb, sb.expose()), (k.clone(), s.expose()));
    let before = a.change_stamp().await.unwrap();
    b.update_access_key_status(&acct.id, None, &k.key_id, KeyStatus::Inactive)
        .await
        .unwrap();
    assert!(a.change_stamp().await.unwrap() > before);
    assert_eq!(
        a.get_access_key(&k.key_id).await.unwrap().unwrap().0.status,
        KeyStatus::Inactive
    );
    race(a, b).await;
}

async fn race(a: &Store, b: &Store) {
    const TASKS: usize = 16;
    let acct = new_account(a).await;
    a.create_user(&acct, "racer", "/", &[]).await.unwrap();

    // Keys for one user and for the root, from many tasks at once.
    let mut handles = Vec::new();
    for i in 0..TASKS {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let acct = acct.clone();
        handles.push(tokio::spawn(async move {
            let user = if i % 4 < 2 { Some("racer") } else { None };
            (
                user.is_some(),
                s.create_access_key(&acct, user).await.map(|(k, _)| k),
            )
        }));
    }
    let (mut user_ok, mut root_ok) = (0, 0);
    for h in handles {
        match h.await.unwrap() {
            (true, Ok(_)) => user_ok += 1,
            (false, Ok(_)) => root_ok += 1,
            (_, Err(StoreError::LimitExceeded(_))) => {}
            (_, Err(e)) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!((user_ok, root_ok), (2, 2));
    assert_eq!(
        a.list_access_keys(&acct, Some("racer"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(b.list_access_keys(&acct, None).await.unwrap().len(), 2);

    // Users whose names differ only in case, from many tasks at once.
    let mut handles = Vec::new();
    for i in 0..TASKS {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let acct = acct.clone();
        let name: String = "samename"
            .chars()
            .enumerate()
            .map(|(j, c)| {
                if (i >> (j % 4)) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        handles.push(tokio::spawn(async move {
            s.create_user(&acct, &name, "/", &[]).await
        }));
    }
    let mut created = HashSet::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(u) => {
                created.insert(u.user_id);
            }
            Err(StoreError::EntityAlreadyExists(_)) => {}
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(created.len(), 1);
}

fn event(
    account: &str,
    secs: u64,
    name: &str,
    key: &str,
    user: Option<&str>,
    ro: bool,
) -> AuditRecord {
    AuditRecord {
        account_id: Some(account.to_owned()),
        time: UNIX_EPOCH + Duration::from_secs(secs),
        event_id: format!("ev-{account}-{secs}-{name}-{key}"),
        event_name: name.to_owned(),
        event_source: "iam.amazonaws.com".to_owned(),
        region: "us-east-1".to_owned(),
        identity_type: if user.is_some() {
            IdentityType::IamUser
        } else {
            IdentityType::Root
        },
        principal_id: Some(user.map_or(account.to_owned(), |u| format!("AIDA{u}"))),
        arn: Some(format!("arn:aws:iam::{account}:{}", user.unwrap_or("root"))),
        access_key_id: Some(key.to_owned()),
        user_name: user.map(str::to_owned),
        session: false,
        read_only: ro,
        source_ip: Some("192.0.2.1".to_owned()),
        user_agent: Some("aws-cli/2".to_owned()),
        error_code: (!ro).then(|| "AccessDenied".to_owned()),
        error_message: (!ro).then(|| "denied".to_owned()),
        request_parameters: (!ro).then(|| format!("{{\"userName\":\"{key}\"}}")),
        response_elements: None,
        request_id: format!("req-{secs}-{key}"),
        stored_json: None,
    }
}

/// A stored batch gives its buffer back for a later batch, which keeps nothing of the earlier
/// events. A batch is kept whole for another try: appending it again stores its events again.
async fn audit_batch_buffers_are_reused(store: &Store) {
    let a = new_account(store).await;
    let base = 1_810_000_000;
    let mut first = EventBatch::new();
    for i in 0..40u64 {
        first.push(
            &event(
                &a,
                base + i,
                "ListUsers",
                "AKIAFIRSTBATCH",
                Some("alice"),
                true,
            )
            .as_event(),
        );
    }
    store.append_batch(&mut first).await.unwrap();
    let buffers = first.into_buffers();
    assert_eq!(buffers.len(), 1, "the stored blob's buffer comes back");
    assert!(
        buffers[0].capacity() > 40 * 20,
        "capacity {}",
        buffers[0].capacity()
    );
    let mut second = EventBatch::with_buffers(buffers);
    for i in 0..2u64 {
        second.push(
            &event(
                &a,
                base + 100 + i,
                "DeleteUser",
                "AKIASECONDBATCH",
                None,
                false,
            )
            .as_event(),
        );
    }
    store.append_batch(&mut second).await.unwrap();
    let all = store.lookup_events(&query(&a, None, 50)).await.unwrap();
    assert_eq!(all.events.len(), 42);
    let newest: Vec<_> = all.events[..2]
        .iter()
        .map(|e| (e.event_name.as_str(), e.access_key_id.as_deref()))
        .collect();
    assert_eq!(newest, [("DeleteUser", Some("AKIASECONDBATCH")); 2]);
    assert!(all.events[2..]
        .iter()
        .all(|e| e.event_name == "ListUsers" && e.user_name.as_deref() == Some("alice")));
    // The batch stays as it was for another try: storing it again stores its events again.
    store.append_batch(&mut second).await.unwrap();
    let again = store.lookup_events(&query(&a, None, 50)).await.unwrap();
    assert_eq!(again.events.len(), 44);
}

/// Batches stored without waiting for the disk are read back like any other, in order with the
/// synced ones around them, on both engines (SQLite: synchronous=NORMAL for that commit;
/// PostgreSQL: synchronous_commit off for that transaction).
async fn unsynced_batches_are_stored_and_read_back(store: &Store) {
    let a = new_account(store).await;
    let base = 1_811_000_000;
    for (round, name) in ["GetCallerIdentity", "CreateUser", "ListUsers"]
        .iter()
        .enumerate()
    {
        let mut b = EventBatch::new();
        for i in 0..5u64 {
            let t = base + round as u64 * 10 + i;
            b.push(&event(&a, t, name, "AKIAUNSYNCED", Some("ann"), round != 1).as_event());
        }
        if round == 1 {
            store.append_batch(&mut b).await.unwrap();
        } else {
            store.append_batch_unsynced(&mut b).await.unwrap();
        }
    }
    let all = store.lookup_events(&query(&a, None, 50)).await.unwrap();
    let names: Vec<_> = all.events.iter().map(|e| e.event_name.as_str()).collect();
    let mut want = vec!["ListUsers"; 5];
    want.extend(["CreateUser"; 5]);
    want.extend(["GetCallerIdentity"; 5]);
    assert_eq!(names, want);
    // An empty batch is no write.
    store
        .append_batch_unsynced(&mut EventBatch::new())
        .await
        .unwrap();
}

fn query(account: &str, filter: Option<EventFilter>, max: usize) -> EventQuery {
    EventQuery {
        account_id: account.to_owned(),
        filter,
        start: None,
        end: None,
        max_results: max,
        next_token: None,
    }
}

/// Audit events: stored per existing account, newest first, filtered, paged with tokens that only
/// work for the same account and filter, pruned by age.
async fn audit_events(store: &Store) {
    let a = new_account(store).await;
    let b = new_account(store).await;
    let base = 1_800_000_000;
    // One stored batch per append and account: the first seven events in separate appends (so
    // pruning, which drops whole batches, can be checked to the event), the rest in one.
    for i in 0..7u64 {
        let (key, user, name, ro) = match i % 3 {
            0 => ("AKIAOLDKEY", Some("alice"), "ListUsers", true),
            1 => ("AKIANEWKEY", Some("bob"), "CreateUser", false),
            _ => ("AKIAOLDKEY", None, "GetCallerIdentity", true),
        };
        store
            .append_events(&[event(&a, base + i, name, key, user, ro)])
            .await
            .unwrap();
    }
    let mut batch = Vec::new();
    // Two events in the same millisecond: the later stored comes first.
    batch.push(event(&a, base + 10, "DeleteUser", "AKIATIE1", None, false));
    batch.push(event(&a, base + 10, "DeleteUser", "AKIATIE2", None, false));
    batch.push(event(&b, base + 3, "ListUsers", "AKIAOLDKEY", None, true));
    // No such account: skipped, not an error.
    batch.push(event(
        "000000000000",
        base,
        "ListUsers",
        "AKIAGHOST",
        None,
        true,
    ));
    store.append_events(&batch).await.unwrap();

    let all = store.lookup_events(&query(&a, None, 50)).await.unwrap();
    assert_eq!(all.next_token, None);
    assert_eq!(all.events.len(), 9);
    assert_eq!(all.events[0].access_key_id.as_deref(), Some("AKIATIE2"));
    assert_eq!(all.events[1].access_key_id.as_deref(), Some("AKIATIE1"));
    let times: Vec<_> = all.events.iter().map(|e| e.time).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(times, sorted, "newest first");
    assert!(all
        .events
        .iter()
        .all(|e| e.account_id.as_deref() == Some(a.as_str())));
    let stored = &all.events[2];
    assert_eq!(
        stored,
        &event(&a, base + 6, "ListUsers", "AKIAOLDKEY", Some("alice"), true)
    );

    let ghost = store
        .lookup_events(&query("000000000000", None, 50))
        .await
        .unwrap();
    assert!(ghost.events.is_empty());

    let count = |f: EventFilter| {
        let q = query(&a, Some(f), 50);
        async move { store.lookup_events(&q).await.unwrap().events.len() }
    };
    assert_eq!(
        count(EventFilter::AccessKeyId("AKIAOLDKEY".into())).await,
        5
    );
    assert_eq!(count(EventFilter::Username("bob".into())).await, 2);
    assert_eq!(count(EventFilter::EventName("DeleteUser".into())).await, 2);
    assert_eq!(count(EventFilter::ReadOnly(true)).await, 5);
    assert_eq!(count(EventFilter::ReadOnly(false)).await, 4);
    assert_eq!(
        count(EventFilter::EventSource("iam.amazonaws.com".into())).await,
        9
    );
    assert_eq!(
        count(EventFilter::EventSource("sts.amazonaws.com".into())).await,
        0
    );
    let id = format!("ev-{a}-{}-CreateUser-AKIANEWKEY", base + 4);
    assert_eq!(count(EventFilter::EventId(id)).await, 1);

    // Time range, inclusive at both ends.
    let mut q = query(&a, None, 50);
    q.start = Some(UNIX_EPOCH + Duration::from_secs(base + 2));
    q.end = Some(UNIX_EPOCH + Duration::from_secs(base + 4));
    assert_eq!(store.lookup_events(&q).await.unwrap().events.len(), 3);

    // Pages of 2 walk all 9 events once, in order.
    let filter = Some(EventFilter::AccessKeyId("AKIAOLDKEY".into()));
    let mut q = query(&a, filter.clone(), 2);
    let mut seen = Vec::new();
    let mut first_token = None;
    loop {
        let page = store.lookup_events(&q).await.unwrap();
        assert!(page.events.len() <= 2);
        seen.extend(page.events.iter().map(|e| e.event_id.clone()));
        match page.next_token {
            Some(t) => {
                first_token.get_or_insert_with(|| t.clone());
                q.next_token = Some(t);
            }
            None => break,
        }
    }
    let expected: Vec<_> = store
        .lookup_events(&query(&a, filter.clone(), 50))
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(seen, expected);
    let token = first_token.unwrap();

    // A token is bound to its account and filter, and cannot be made up.
    let mut other = query(&b, filter.clone(), 2);
    other.next_token = Some(token.clone());
    assert_err(
        store.lookup_events(&other).await,
        "ValidationError",
        "Invalid NextToken.",
    );
    let mut other = query(&a, Some(EventFilter::Username("bob".into())), 2);
    other.next_token = Some(token.clone());
    assert_err(
        store.lookup_events(&other).await,
        "ValidationError",
        "Invalid NextToken.",
    );
    for bad in ["", "zz", "00", &token[..token.len() - 2]] {
        let mut q = query(&a, filter.clone(), 2);
        q.next_token = Some(bad.to_owned());
        assert_err(
            store.lookup_events(&q).await,
            "ValidationError",
            "Invalid NextToken.",
        );
    }
    assert!(store.lookup_events(&query(&a, None, 0)).await.is_err());
    assert!(store.lookup_events(&query(&a, None, 51)).await.is_err());

    // Pruning deletes the oldest, in batches, across accounts.
    let cut = UNIX_EPOCH + Duration::from_secs(base + 4);
    let mut deleted = 0;
    loop {
        let n = store.prune_events(cut, 2).await.unwrap();
        deleted += n;
        if n == 0 {
            break;
        }
    }
    // Account a had 4 events before base+4 (0..=3) and b one, plus older events of other runs
    // sharing the database may exist, so only a lower bound is certain.
    assert!(deleted >= 5, "{deleted}");
    let left = store.lookup_events(&query(&a, None, 50)).await.unwrap();
    assert_eq!(left.events.len(), 5);
    assert!(left.events.iter().all(|e| e.time >= cut));
    assert!(store
        .lookup_events(&query(&b, None, 50))
        .await
        .unwrap()
        .events
        .is_empty());
}

/// Batches whose times overlap (several servers, or events queued out of order) still come back in
/// exact time order, across many batches and pages; an event id made by `new_event_id` is found
/// by its time.
async fn audit_batches_overlap(store: &Store) {
    let a = new_account(store).await;
    let base = 1_850_000_000_000u64;
    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(base + ms);
    let mut expected = Vec::new();
    // 30 appends; append k holds the times k, k+30, k+60 (ms), so every batch overlaps the others.
    for k in 0..30u64 {
        let batch: Vec<_> = [k + 60, k, k + 30]
            .into_iter()
            .map(|ms| {
                let mut e = event(&a, 0, "GetCallerIdentity", "AKIAOVERLAP", None, true);
                e.time = at(ms);
                e.event_id = keyward_store::new_event_id(e.time).to_string();
                expected.push((ms, e.event_id.clone()));
                e
            })
            .collect();
        store.append_events(&batch).await.unwrap();
    }
    expected.sort_by(|x, y| y.0.cmp(&x.0));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    for page_size in [1, 7, 50] {
        let mut q = query(&a, None, page_size);
        let mut seen = Vec::new();
        loop {
            let page = store.lookup_events(&q).await.unwrap();
            seen.extend(page.events.into_iter().map(|e| e.event_id));
            match page.next_token {
                Some(t) => q.next_token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, expected, "pages of {page_size}");
    }
    // The time range applies to events, not batches.
    let mut q = query(&a, None, 50);
    q.start = Some(at(25));
    q.end = Some(at(34));
    let ids: Vec<_> = store
        .lookup_events(&q)
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, expected[55..65].to_vec());
    let id = expected[17].clone();
    assert!(keyward_store::event_id_time(&id).is_some());
    let found = store
        .lookup_events(&query(&a, Some(EventFilter::EventId(id.clone())), 50))
        .await
        .unwrap();
    assert_eq!(found.events.len(), 1);
    assert_eq!(found.events[0].event_id, id);
}

/// The authentication lookup returns the owner's id and path with the key; none for the root.
async fn key_lookup_with_owner(store: &Store) {
    let acct = new_account(store).await;
    let user = store
        .create_user(&acct, "Owner", "/team/", &[])
        .await
        .unwrap();
    let (k, secret) = store.create_access_key(&acct, Some("owner")).await.unwrap();
    let (found, s, owner) = store
        .get_access_key_with_owner(&k.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, k);
    assert_eq!(found.user_name.as_deref(), Some("Owner"));
    assert_eq!(s.expose(), secret.expose());
    let owner = owner.expect("a user's key has an owner");
    assert_eq!(owner.user_id, user.user_id);
    assert_eq!(owner.path, "/team/");
    // A rename and a move are seen by the next lookup.
    store
        .update_user(&acct, "Owner", Some("Renamed"), Some("/other/"))
        .await
        .unwrap();
    let (found, _, owner) = store
        .get_access_key_with_owner(&k.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.user_name.as_deref(), Some("Renamed"));
    assert_eq!(owner.unwrap().path, "/other/");

    let (root_key, _) = store.create_access_key(&acct, None).await.unwrap();
    let (_, _, owner) = store
        .get_access_key_with_owner(&root_key.key_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner, None);
    assert!(store
        .get_access_key_with_owner("AKIAAAAAAAAAAAAAAAAA")
        .await
        .unwrap()
        .is_none());

    // Many at once: the existing ones, each as the single lookup finds it; unknown ids left out.
    let ids = vec![
        k.key_id.clone(),
        "AKIAAAAAAAAAAAAAAAAA".to_owned(),
        root_key.key_id.clone(),
    ];
    let mut many = store.get_access_keys_with_owner(&ids).await.unwrap();
    many.sort_by(|a, b| a.0.key_id.cmp(&b.0.key_id));
    let mut one = Vec::new();
    for id in [&k.key_id, &root_key.key_id] {
        one.push(store.get_access_key_with_owner(id).await.unwrap().unwrap());
    }
    one.sort_by(|a, b| a.0.key_id.cmp(&b.0.key_id));
    assert_eq!(many.len(), 2);
    for ((k1, s1, o1), (k2, s2, o2)) in many.iter().zip(&one) {
        assert_eq!((k1, o1), (k2, o2));
        assert_eq!(s1.expose(), s2.expose());
    }
    assert!(store
        .get_access_keys_with_owner(&[])
        .await
        .unwrap()
        .is_empty());
}

/// Bulk loading makes the same users and keys as single creates, with the same checks.
async fn bulk_users_with_keys(store: &Store) {
    let acct = new_account(store).await;
    let names: Vec<String> = (0..50).map(|i| format!("bulk-{i}")).collect();
    let made = store.create_users_with_keys(&acct, &names).await.unwrap();
    assert_eq!(made.len(), 50);
    let mut ids = HashSet::new();
    for ((user, key, secret), name) in made.iter().zip(&names) {
        assert_eq!(&user.name, name);
        assert_eq!(user.path, "/");
        assert_eq!(key.user_name.as_deref(), Some(name.as_str()));
        assert!(ids.insert(key.key_id.clone()));
        let (_, s, owner) = store
            .get_access_key_with_owner(&key.key_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            s.expose(),
            secret.expose(),
            "the secret is sealed and opens"
        );
        assert_eq!(owner.unwrap().user_id, user.user_id);
    }
    // A taken name (ignoring case) is refused as by CreateUser.
    let again = vec!["fresh-1".to_owned(), "BULK-3".to_owned()];
    assert_err(
        store.create_users_with_keys(&acct, &again).await,
        "EntityAlreadyExists",
        "User with name BULK-3 already exists.",
    );
    assert_err(
        store
            .create_users_with_keys("999999999999", &["x".to_owned()])
            .await,
        "NoSuchEntity",
        "The account with id 999999999999 cannot be found.",
    );
}
