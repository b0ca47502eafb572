//! Protocol edges: binary client events with acks and their upstream
//! envelope on Redis, the connect timeout, invalid packets, and Engine.IO
//! HTTP errors.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_testkit::{
    net::http_request,
    node::{ConnectOptions, bin},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_client_event_with_ack_is_published_upstream() {
    let redis = redis();
    let gw = redis_gateway(&redis, &[]).await;

    // Listen where API services would: socket.io-upstream#/#
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("socket.io-upstream#/#").await.unwrap();
    let mut upstream = pubsub.into_on_message();

    let node = node().await;
    for (name, opts) in [
        ("ws", ConnectOptions::new().websocket_only()),
        ("poll", ConnectOptions::new().polling_only()),
    ] {
        let user = format!("uploader-{name}");
        let c = connect(&node, name, &gw, opts.token(token(&user))).await;
        let blob: Vec<u8> = vec![0, 1, 2, 0xfe, 0xff, b'\n', b'"'];
        let ack = node
            .emit_with_ack(
                name,
                "upload",
                vec![json!("report.bin"), bin(&blob), json!({"size": blob.len()})],
                T,
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: no ack: {e:#}\n{}", gw.logs()));
        assert_eq!(ack, json!([{"ok": true, "receivers": 1}]), "{name}");

        let msg = tokio::time::timeout(T, upstream.next())
            .await
            .expect("upstream message in time")
            .expect("pubsub stream open");
        assert_eq!(msg.get_channel_name(), "socket.io-upstream#/#");
        let env: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
        assert_eq!(env["nsp"], json!("/"), "{env}");
        assert_eq!(env["event"], json!("upload"), "{env}");
        assert_eq!(env["user"], json!(user), "{env}");
        assert_eq!(env["socket"], json!(c.sid), "{env}");
        assert_eq!(env["args"][0], json!("report.bin"), "{env}");
        assert_eq!(
            env["args"][1],
            json!({"_placeholder": true, "num": 0}),
            "{env}"
        );
        assert_eq!(env["args"][2], json!({"size": blob.len()}), "{env}");
        assert_eq!(
            env["attachments"],
            json!([base64::engine::general_purpose::STANDARD.encode(&blob)]),
            "{env}"
        );
    }

    // A plain JSON event without ack is published too.
    node.emit("ws", "ping-upstream", vec![json!({"a": [1, 2.5, "ü"]})])
        .await
        .unwrap();
    let msg = tokio::time::timeout(T, upstream.next())
        .await
        .expect("upstream message in time")
        .expect("pubsub stream open");
    let env: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
    assert_eq!(env["event"], json!("ping-upstream"));
    assert_eq!(env["args"], json!([{"a": [1, 2.5, "ü"]}]));
    assert_eq!(env["attachments"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_closes_silent_session() {
    let gw = embedded_gateway(&[("SWITCHBOARD_SOCKETIO__CONNECT_TIMEOUT_MS", "300")]).await;
    let mut ws = RawWs::connect(gw.port(), "").await.unwrap();
    let started = Instant::now();
    let open = ws.open_packet().await.unwrap();
    assert!(open["sid"].is_string(), "{open}");
    // Never send CONNECT: the gateway closes the session.
    ws.expect_closed(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", gw.logs()));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed after {elapsed:?}, before the connect timeout"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "closed only after {elapsed:?}"
    );
    let text = metrics(&gw).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_connect_refused_total{reason=\"connect_timeout\"}"
        ),
        Some(1.0),
        "{text}"
    );

    // A session that does CONNECT in time is not closed.
    let mut ok = RawWs::connect(gw.port(), "").await.unwrap();
    ok.socketio_connect(&token("u1")).await.unwrap();
    assert!(
        ok.expect_closed(Duration::from_millis(800)).await.is_err(),
        "a connected session was closed by the connect timeout"
    );
}

/// Sends `packet` on a raw websocket (after CONNECT if `connect`) and
/// expects the gateway to close it, counting `label` in bad packets.
async fn invalid_packet_closes(packet: &str, connect: bool, label: Option<&str>) {
    let gw = embedded_gateway(&[]).await;
    let mut ws = RawWs::connect(gw.port(), "").await.unwrap();
    if connect {
        ws.socketio_connect(&token("u1")).await.unwrap();
    } else {
        ws.open_packet().await.unwrap();
    }
    ws.send_text(packet).await.unwrap();
    ws.expect_closed(Duration::from_secs(3))
        .await
        .unwrap_or_else(|e| panic!("packet {packet:?}: {e:#}\n{}", gw.logs()));
    if let Some(label) = label {
        let series = format!("switchboard_bad_packets_total{{reason=\"{label}\"}}");
        wait_metric(&gw, &series, T, |v| v == 1.0).await;
    }
    // The gateway is fine afterwards.
    let mut again = RawWs::connect(gw.port(), "").await.unwrap();
    again.socketio_connect(&token("u2")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_event_payload_not_an_array_closes() {
    invalid_packet_closes(r#"42"notarray""#, true, Some("invalid_event_payload")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_event_name_not_a_string_closes() {
    invalid_packet_closes("42[1,2]", true, Some("invalid_event_payload")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_event_name_closes() {
    invalid_packet_closes(r#"42["disconnect"]"#, true, Some("reserved_event")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_socketio_packet_closes() {
    invalid_packet_closes("4x{}", true, Some("unparsable")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_before_connect_closes() {
    invalid_packet_closes(r#"42["hello"]"#, false, Some("namespace_not_connected")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_payload_not_an_object_closes() {
    invalid_packet_closes(r#"40"token""#, false, Some("invalid_connect_payload")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ping_closes() {
    // Engine.IO v4: heartbeats go server -> client; a client ping is a
    // protocol error (as in the Node server).
    invalid_packet_closes("2", true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_engine_packet_type_closes() {
    invalid_packet_closes("9garbage", true, None).await;
}

fn engine_get(gw: &switchboard_testkit::GatewayProcess, query: &str) -> (u16, Value) {
    let r = http_request(
        "GET",
        &format!("{}/socket.io/?{query}", gw.url()),
        &[],
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or_else(|_| json!(r.text()));
    (r.status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_id_is_400_code_1() {
    let gw = embedded_gateway(&[]).await;
    for sid in ["AAAAAAAAAAAAAAAAAAAA", "nope", ""] {
        let (status, body) = tokio::task::block_in_place(|| {
            engine_get(&gw, &format!("EIO=4&transport=polling&sid={sid}"))
        });
        assert_eq!(status, 400, "sid {sid:?}: {body}");
        assert_eq!(
            body,
            json!({"code": 1, "message": "Session ID unknown"}),
            "sid {sid:?}"
        );
    }
    // POST to an unknown sid too.
    let r = tokio::task::block_in_place(|| {
        http_request(
            "POST",
            &format!(
                "{}/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA",
                gw.url()
            ),
            &[("Content-Type", "text/plain")],
            Some(b"40"),
            Duration::from_secs(5),
        )
        .unwrap()
    });
    assert_eq!(r.status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"code": 1, "message": "Session ID unknown"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio3_is_unsupported_protocol_version_code_5() {
    let gw = embedded_gateway(&[]).await;
    for query in [
        "EIO=3&transport=polling",
        "EIO=3&transport=websocket",
        "transport=polling",
    ] {
        let (status, body) = tokio::task::block_in_place(|| engine_get(&gw, query));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body,
            json!({"code": 5, "message": "Unsupported protocol version"}),
            "{query}"
        );
    }
    // For contrast, EIO=4 opens a session.
    let (status, _) = tokio::task::block_in_place(|| engine_get(&gw, "EIO=4&transport=polling"));
    assert_eq!(status, 200);
}
