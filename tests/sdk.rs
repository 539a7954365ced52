//! End-to-end tests with the AWS SDK for Rust (`aws-sdk-iam`, `aws-sdk-sts`) against the real
//! `keyward` binary on a loopback port.

use aws_credential_types::Credentials;
use aws_sdk_iam::error::ProvideErrorMetadata;

mod common;
use common::{Process, ACCOUNT, ROOT_KEY_ID, ROOT_SECRET};

struct Server {
    _process: Process,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A server on SQLite (`postgres == false`) or on a fresh PostgreSQL database; `None` when that
    /// backend is not available here.
    fn start(postgres: bool) -> Option<Server> {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra = if postgres {
            vec![
                "--database-url".to_owned(),
                common::fresh_postgres_database()?,
            ]
        } else {
            Vec::new()
        };
        let process = Process::start(&dir.path().join("data"), &extra);
        let url = process.url.clone();
        Some(Server {
            _process: process,
            url,
            _dir: dir,
        })
    }

    async fn config(
        &self,
        key_id: &str,
        secret: &str,
        token: Option<&str>,
    ) -> aws_config::SdkConfig {
        let creds = Credentials::new(
            key_id,
            secret,
            token.map(str::to_owned),
            None,
            "keyward-test",
        );
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new("eu-central-1"))
            .credentials_provider(creds)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await
    }

    async fn sts(&self, key_id: &str, secret: &str, token: Option<&str>) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.config(key_id, secret, token).await)
    }

    async fn iam(&self, key_id: &str, secret: &str) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config(key_id, secret, None).await)
    }
}

#[tokio::test]
async fn rust_sdk_full_key_lifecycle_sqlite() {
    full_key_lifecycle(Server::start(false).expect("sqlite")).await;
}

#[tokio::test]
async fn rust_sdk_full_key_lifecycle_postgres() {
    if let Some(s) = Server::start(true) {
        full_key_lifecycle(s).await;
    }
}

async fn full_key_lifecycle(s: Server) {
    let root_sts = s.sts(ROOT_KEY_ID, ROOT_SECRET, None).await;
    let me = root_sts
        .get_caller_identity()
        .send()
        .await
        .expect("root identity");
    assert_eq!(me.account(), Some(ACCOUNT));
    assert_eq!(
        me.arn(),
        Some(format!("arn:aws:iam::{ACCOUNT}:root").as_str())
    );
    assert_eq!(me.user_id(), Some(ACCOUNT));

    let iam = s.iam(ROOT_KEY_ID, ROOT_SECRET).await;
    let user = iam
        .create_user()
        .user_name("sdk-user")
        .path("/sdk/")
        .send()
        .await
        .expect("create user");
    let user = user.user().expect("user");
    assert_eq!(
        user.arn(),
        format!("arn:aws:iam::{ACCOUNT}:user/sdk/sdk-user")
    );
    assert!(user.user_id().starts_with("AIDA"));

    let key = iam
        .create_access_key()
        .user_name("sdk-user")
        .send()
        .await
        .expect("create key");
    let key = key.access_key().expect("key");
    let (kid, secret) = (
        key.access_key_id().to_owned(),
        key.secret_access_key().to_owned(),
    );
    assert!(kid.starts_with("AKIA") && kid.len() == 20 && secret.len() == 40);

    let user_sts = s.sts(&kid, &secret, None).await;
    let ident = user_sts
        .get_caller_identity()
        .send()
        .await
        .expect("user identity");
    assert_eq!(
        ident.arn(),
        Some(format!("arn:aws:iam::{ACCOUNT}:user/sdk/sdk-user").as_str())
    );
    let info = user_sts
        .get_access_key_info()
        .access_key_id(&kid)
        .send()
        .await
        .expect("key info");
    assert_eq!(info.account(), Some(ACCOUNT));

    // Temporary credentials work, and identify the user.
    let session = user_sts
        .get_session_token()
        .duration_seconds(900)
        .send()
        .await
        .expect("session");
    let c = session.credentials().expect("credentials");
    assert!(c.access_key_id().starts_with("ASIA"));
    let temp = s
        .sts(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token()),
        )
        .await;
    let ident = temp
        .get_caller_identity()
        .send()
        .await
        .expect("session identity");
    assert_eq!(
        ident.arn(),
        Some(format!("arn:aws:iam::{ACCOUNT}:user/sdk/sdk-user").as_str())
    );

    // A third key is over the limit (the second counts even when inactive).
    let second = iam
        .create_access_key()
        .user_name("sdk-user")
        .send()
        .await
        .expect("second key");
    let second_id = second.access_key().expect("key").access_key_id().to_owned();
    iam.update_access_key()
        .user_name("sdk-user")
        .access_key_id(&second_id)
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .expect("deactivate second");
    let err = iam
        .create_access_key()
        .user_name("sdk-user")
        .send()
        .await
        .expect_err("limit");
    assert_eq!(err.code(), Some("LimitExceeded"));
    assert_eq!(
        err.message(),
        Some("Cannot exceed quota for AccessKeysPerUser: 2")
    );

    // Deactivated: InvalidClientTokenId.
    iam.update_access_key()
        .user_name("sdk-user")
        .access_key_id(&kid)
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .expect("deactivate");
    let err = user_sts
        .get_caller_identity()
        .send()
        .await
        .expect_err("inactive key refused");
    assert_eq!(err.code(), Some("InvalidClientTokenId"));
    assert_eq!(
        err.message(),
        Some("The security token included in the request is invalid.")
    );

    // Deleted user: NoSuchEntity after its keys are gone; DeleteConflict before.
    let err = iam
        .delete_user()
        .user_name("sdk-user")
        .send()
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Some("DeleteConflict"));
    for k in [&kid, &second_id] {
        iam.delete_access_key()
            .user_name("sdk-user")
            .access_key_id(k)
            .send()
            .await
            .expect("delete key");
    }
    iam.delete_user()
        .user_name("sdk-user")
        .send()
        .await
        .expect("delete user");
    let err = iam
        .get_user()
        .user_name("sdk-user")
        .send()
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Some("NoSuchEntity"));
}

#[tokio::test]
async fn rust_sdk_wrong_secret_unknown_key_and_pagination_sqlite() {
    wrong_secret_unknown_key_and_pagination(Server::start(false).expect("sqlite")).await;
}

#[tokio::test]
async fn rust_sdk_wrong_secret_unknown_key_and_pagination_postgres() {
    if let Some(s) = Server::start(true) {
        wrong_secret_unknown_key_and_pagination(s).await;
    }
}

async fn wrong_secret_unknown_key_and_pagination(s: Server) {
    let wrong = s
        .sts(ROOT_KEY_ID, &ROOT_SECRET.replace('w', "x"), None)
        .await;
    let err = wrong
        .get_caller_identity()
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
    let unknown = s.sts("AKIARZPUZDIKAAAAAAAB", ROOT_SECRET, None).await;
    let err = unknown
        .get_caller_identity()
        .send()
        .await
        .expect_err("unknown key");
    assert_eq!(err.code(), Some("InvalidClientTokenId"));

    let iam = s.iam(ROOT_KEY_ID, ROOT_SECRET).await;
    for i in 0..5 {
        iam.create_user()
            .user_name(format!("p{i}"))
            .send()
            .await
            .expect("create");
    }
    let names: Vec<String> = iam
        .list_users()
        .max_items(2)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("paginate")
        .into_iter()
        .map(|u| u.user_name().to_owned())
        .collect();
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    let err = iam
        .get_user()
        .user_name("bad name!")
        .send()
        .await
        .expect_err("validation");
    assert_eq!(err.code(), Some("ValidationError"));
}
