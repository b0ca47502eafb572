//! TLS (server name checked, mutual TLS) and ACL users against a real
//! `redis-server` serving TLS with certificates generated for the test.

use std::path::PathBuf;

use switchboard_redis::{Error, Redis, RedisSettings};
use switchboard_testkit::{
    redis::{RedisOptions, RedisServer},
    tls::TestPki,
};

/// A least-privilege publishing user, as the README suggests.
const PUBLISHER_ACL: &str =
    "publisher on >publisher-secret resetchannels &socket.io* -@all +publish +spublish";

fn tls_server(pki: &TestPki, mutual: bool) -> RedisServer {
    RedisServer::start_with(
        RedisOptions::default()
            .tls(pki, mutual)
            .user(PUBLISHER_ACL)
            .user("gateway on >gateway-secret resetchannels &socket.io* -@all +subscribe +ssubscribe +psubscribe +publish"),
    )
    .expect("redis-server with TLS")
}

fn settings(server: &RedisServer, pki: &TestPki) -> RedisSettings {
    RedisSettings {
        url: Some(server.url()),
        tls_ca_file: Some(pki.ca_file()),
        tls_cert_file: Some(pki.client_cert_file()),
        tls_key_file: Some(pki.client_key_file()),
        username: Some("publisher".into()),
        password: Some("publisher-secret".into()),
        timeout_ms: 3000,
        ..RedisSettings::default()
    }
}

async fn publish_error(settings: RedisSettings) -> Error {
    let err = publish_error_inner(settings).await;
    eprintln!("error: {err}");
    err
}

async fn publish_error_inner(settings: RedisSettings) -> Error {
    let redis = Redis::new(&settings).expect("valid settings");
    redis
        .publisher()
        .unwrap()
        .publish("socket.io#/#", b"x")
        .await
        .expect_err("the publish must fail")
}

#[tokio::test]
async fn mutual_tls_with_acl_users_delivers() {
    let pki = TestPki::generate().unwrap();
    let server = tls_server(&pki, true);
    let publisher = Redis::new(&settings(&server, &pki))
        .unwrap()
        .publisher()
        .unwrap();
    let gateway = Redis::new(&RedisSettings {
        username: Some("gateway".into()),
        password: None,
        password_file: Some(write_temp(&pki, "gateway-password", "gateway-secret\n")),
        ..settings(&server, &pki)
    })
    .unwrap();
    let (sub, mut messages) = gateway.subscriber().unwrap();
    sub.subscribe(&["socket.io#/#"]).await.unwrap();
    assert_eq!(
        publisher
            .publish("socket.io#/#", b"over tls")
            .await
            .unwrap(),
        1
    );
    let m = tokio::time::timeout(std::time::Duration::from_secs(10), messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, b"over tls");
    // The ACL user may publish only on its channels.
    let err = publisher.publish("other", b"x").await.unwrap_err();
    assert!(
        matches!(&err, Error::Server { code: Some(c), .. } if c == "NOPERM"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("the ACL user \"publisher\" lacks a permission"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_ca_wrong_name_missing_client_cert_and_wrong_password_fail_clearly() {
    let pki = TestPki::generate().unwrap();
    let server = tls_server(&pki, true);
    let good = settings(&server, &pki);

    let err = publish_error(RedisSettings {
        tls_ca_file: Some(pki.other_ca_file()),
        ..good.clone()
    })
    .await;
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("not signed by a CA in redis.tls_ca_file"),
        "{err}"
    );

    let err = publish_error(RedisSettings {
        tls_cert_file: None,
        tls_key_file: None,
        ..good.clone()
    })
    .await;
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("requires one: set redis.tls_cert_file"),
        "{err}"
    );

    let err = publish_error(RedisSettings {
        password: Some("wrong".into()),
        ..good.clone()
    })
    .await;
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("refused the credentials for user \"publisher\""),
        "{text}"
    );
    assert!(text.contains("WRONGPASS"), "{text}");
    assert!(!text.contains("wrong"), "the password leaked: {text}");

    // The same server reached by a name its certificate does not carry.
    let only_localhost = TestPki::generate_for(&["redis.example"]).unwrap();
    let server = tls_server(&only_localhost, false);
    let err = publish_error(RedisSettings {
        tls_cert_file: None,
        tls_key_file: None,
        ..settings(&server, &only_localhost)
    })
    .await;
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not valid for the host name"),
        "{err}"
    );
}

#[tokio::test]
async fn credentials_in_the_url_are_used_and_never_shown() {
    let pki = TestPki::generate().unwrap();
    let server = tls_server(&pki, false);
    let url = server
        .url()
        .replace("rediss://", "rediss://publisher:publisher-secret@");
    let redis = Redis::new(&RedisSettings {
        url: Some(url),
        tls_ca_file: Some(pki.ca_file()),
        ..RedisSettings::default()
    })
    .unwrap();
    assert!(
        !redis.describe().contains("publisher-secret"),
        "{}",
        redis.describe()
    );
    assert_eq!(
        redis
            .publisher()
            .unwrap()
            .publish("socket.io#/#", b"x")
            .await
            .unwrap(),
        0
    );
}

fn write_temp(pki: &TestPki, name: &str, contents: &str) -> PathBuf {
    let path = pki.dir().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
