//! The `switchboard` binary: exit codes, data sources, and bytes on the wire.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use switchboard_testkit::{net::free_port, redis::RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn run(args: &[&str], stdin: Option<&str>, redis_url: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("SWITCHBOARD_REDIS_URL", redis_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchboard");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes()).expect("stdin");
        }
    }
    child.wait_with_output().expect("output")
}

#[test]
fn exit_codes() {
    let dead = format!("redis://127.0.0.1:{}", free_port());
    // Usage errors: 2.
    let out = run(
        &["publish", "--event", "x", "--data", "{not json"],
        None,
        &dead,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
    let out = run(&["publish", "--event", "x", "--args", "{}"], None, &dead);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["publish", "--event", "disconnect"], None, &dead);
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["publish", "--event", "x", "--data", "1", "--args", "[1]"],
        None,
        &dead,
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["kick", "--close"], None, &dead);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all"));
    // Redis unreachable: 3, quickly.
    let started = Instant::now();
    let out = run(&["publish", "--role", "admin", "--event", "x"], None, &dead);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SWITCHBOARD_REDIS_URL"));
}

#[test]
fn publishes_what_the_library_encodes() {
    let server = RedisServer::start().expect("redis-server");
    let url = server.url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut sub = client.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.psubscribe("socket.io*").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    let out = run(
        &[
            "publish",
            "--role",
            "admin",
            "--event",
            "ticket_updated",
            "--data",
            "-",
        ],
        Some("{\"id\":7,\"a\":[1,2.5]}\n"),
        &url,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 subscriber"));
    let msg = pubsub.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), "socket.io#/#role:admin#");
    let b = switchboard_broadcaster::Broadcaster::connect(url.as_str()).unwrap();
    let expected = b
        .to_role("admin")
        .encode_values(
            switchboard_wire::json_str_to_msgpack(r#"["ticket_updated",{"id":7,"a":[1,2.5]}]"#)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(msg.get_payload_bytes(), expected.payload.as_slice());

    let out = run(
        &[
            "publish",
            "--user",
            "42",
            "--except",
            "sid1",
            "--namespace",
            "/admin",
            "--volatile",
            "--event",
            "n",
            "--args",
            r#"["a", 1]"#,
        ],
        None,
        &url,
    );
    assert!(out.status.success(), "{out:?}");
    let msg = pubsub.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), "socket.io#/admin#user:42#");
    let decoded = switchboard_wire::decode_broadcast(msg.get_payload_bytes()).unwrap();
    assert!(decoded.opts.flags.volatile);
    assert_eq!(decoded.opts.except, vec!["sid1"]);
    assert_eq!(
        switchboard_wire::encode_event("/admin", &decoded.packet.data, None)
            .unwrap()
            .text,
        r#"2/admin,["n","a",1]"#
    );

    let out = run(&["kick", "--user", "42", "--close"], None, &url);
    assert!(out.status.success(), "{out:?}");
    let msg = pubsub.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), "socket.io-request#/#");
    assert_eq!(
        msg.get_payload_bytes(),
        br#"{"type":4,"opts":{"rooms":["user:42"],"except":[]},"close":true}"#
    );

    let out = run(&["join", "--role", "admin", "--room", "ops"], None, &url);
    assert!(out.status.success(), "{out:?}");
    let msg = pubsub.get_message().unwrap();
    assert_eq!(
        msg.get_payload_bytes(),
        br#"{"type":2,"opts":{"rooms":["role:admin"],"except":[]},"rooms":["ops"]}"#
    );
    let out = run(
        &["leave", "--all", "--room", "ops", "--require-delivery"],
        None,
        &url,
    );
    assert!(out.status.success(), "{out:?}");

    // Nobody subscribed to another key: exit 4 with --require-delivery.
    let out = run(
        &[
            "publish",
            "--key",
            "other",
            "--event",
            "x",
            "--require-delivery",
        ],
        None,
        &url,
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
}
