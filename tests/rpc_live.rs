//! Against a real RabbitMQ: declarations, calls, casts, failures, heartbeats, the
//! exact bytes published, malformed input, dedup, fanout and several topics.
//! Skips with a printed reason when no broker listens.

mod rpc_support;
use rpc_support as common;

use std::time::{Duration, Instant};

use common::*;
use corral::rpc::{RpcClient, RpcError, Target};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{json, Value};

fn client(t: &corral::rpc::Transport, topic: &str, server: Option<&str>) -> RpcClient {
    let mut target = Target::new(topic).with_version("6.0");
    target.server = server.map(str::to_string);
    RpcClient::new(t.clone(), target).with_timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn calls_casts_and_failures() {
    let Some(url) = live_broker() else { return };
    let t = transport(&url, &[], &[]);
    let topic = uniq("live");
    let (srv, ep) = start_server(&t, "h1", &[&topic]).await;
    let c = client(&t, &topic, Some("h1"));

    assert_eq!(
        c.call(&ctx(), "add", args(json!({"a": 2, "b": 3})))
            .await
            .unwrap(),
        json!(5)
    );
    c.cast(&ctx(), "record", args(json!({"tag": "one"})))
        .await
        .unwrap();
    // the shared topic queue serves too
    client(&t, &topic, None)
        .cast(&ctx(), "record", args(json!({"tag": "two"})))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ep.records.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ep.records.lock().unwrap().len(), 2);

    match c.call(&ctx(), "fail_nova", args(json!({}))).await {
        Err(RpcError::Remote(r)) => {
            assert_eq!(
                (r.module.as_str(), r.exc_type.as_str()),
                ("nova.exception", "InstanceNotFound")
            );
            assert_eq!(r.kwargs.get("code"), Some(&json!(404)));
            assert_eq!(r.value, "Instance x could not be found.");
            assert!(r
                .traceback
                .last()
                .unwrap()
                .starts_with("nova.exception.InstanceNotFound"));
        }
        other => panic!("unexpected {other:?}"),
    }
    for (method, version, class) in [
        ("nope", "6.0", "NoSuchMethod"),
        ("_private", "6.0", "NoSuchMethod"),
        ("add", "7.0", "UnsupportedVersion"),
        ("add", "6.5", "UnsupportedVersion"),
    ] {
        let r = c
            .clone()
            .with_version(version)
            .call(&ctx(), method, args(json!({})))
            .await;
        match r {
            Err(RpcError::Remote(r)) => {
                assert_eq!(r.module, "oslo_messaging.rpc.dispatcher");
                assert_eq!(r.exc_type, class, "{method} {version}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // a panicking endpoint still answers, and the server carries on
    assert!(matches!(
        c.call(&ctx(), "panic", args(json!({}))).await,
        Err(RpcError::Remote(_))
    ));
    assert_eq!(
        c.call(&ctx(), "add", args(json!({"a": 1, "b": 1})))
            .await
            .unwrap(),
        json!(2)
    );
    srv.stop().await;
    t.shutdown().await;
    delete_topic_queues(&topic, &["h1"]).await;
}

#[tokio::test]
async fn timeouts_and_call_monitor_heartbeats() {
    let Some(url) = live_broker() else { return };
    let t = transport(&url, &[], &[]);
    let topic = uniq("live");
    // nobody listens: typed timeout after the call timeout
    let started = Instant::now();
    let r = client(&t, &topic, Some("nobody"))
        .with_timeout(Duration::from_secs(1))
        .call(&ctx(), "add", args(json!({})))
        .await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(4));

    let (srv, _ep) = start_server(&t, "h1", &[&topic]).await;
    let c = client(&t, &topic, Some("h1"));
    // 4 s of work against a 2 s call monitor: only heartbeats keep it alive
    let r = c
        .clone()
        .with_timeout(Duration::from_secs(20))
        .with_call_monitor_timeout(2)
        .call(&ctx(), "sleep", args(json!({"seconds": 4})))
        .await;
    assert_eq!(r.unwrap(), json!("slept"));
    // the overall timeout wins regardless of heartbeats
    let r = c
        .clone()
        .with_timeout(Duration::from_secs(2))
        .with_call_monitor_timeout(2)
        .call(&ctx(), "sleep", args(json!({"seconds": 4})))
        .await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
    srv.stop().await;
    t.shutdown().await;
    delete_topic_queues(&topic, &["h1"]).await;
}

#[tokio::test]
async fn published_bytes_and_properties_match_oslo() {
    let Some(url) = live_broker() else { return };
    let t = transport(&url, &[], &[]);
    let topic = uniq("tap");
    let (_conn, ch) = raw_channel().await;
    ch.exchange_declare(
        "nova".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let tap = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        tap.name().clone(),
        "nova".into(),
        format!("{topic}.h").as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let c = client(&t, &topic, Some("h"));
    c.cast(&ctx(), "record", args(json!({"tag": "é"})))
        .await
        .unwrap();
    let r = c
        .clone()
        .with_timeout(Duration::from_secs(1))
        .call(&ctx(), "add", args(json!({"a": 1})))
        .await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })));

    let get = |ch: lapin::Channel, q: lapin::types::ShortString| async move {
        ch.basic_get(q, BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("tapped message")
    };
    let cast = get(ch.clone(), tap.name().clone()).await;
    let p = &cast.delivery.properties;
    assert_eq!(
        p.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(p.content_encoding().as_ref().unwrap().as_str(), "utf-8");
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(*p.priority(), Some(0));
    assert!(p.expiration().is_none());
    assert!(p.reply_to().is_none() && p.correlation_id().is_none());
    let body = String::from_utf8(cast.delivery.data.clone()).unwrap();
    assert!(body.starts_with(r#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"record\", \"args\": {\"tag\": \"\\u00e9\"}, \"version\": \"6.0\", \"_unique_id\": \""#), "{body}");
    assert!(
        body.contains(r#"\"_context_request_id\": \"req-00000000-0000-0000-0000-000000000001\""#)
    );

    let call = get(ch.clone(), tap.name().clone()).await;
    assert_eq!(
        call.delivery
            .properties
            .expiration()
            .as_ref()
            .unwrap()
            .as_str(),
        "1000"
    );
    let inner = corral::rpc::envelope::deserialize_msg(&call.delivery.data).unwrap();
    let keys: Vec<&str> = inner.keys().map(String::as_str).take(7).collect();
    assert_eq!(
        keys,
        [
            "method",
            "args",
            "version",
            "_msg_id",
            "_reply_q",
            "_timeout",
            "_unique_id"
        ]
    );
    assert_eq!(inner["_timeout"], Value::Null);
    assert_eq!(inner["_reply_q"], json!(t.reply_queue().unwrap()));
    assert!(inner["_reply_q"].as_str().unwrap().starts_with("reply_"));
    assert_eq!(inner["_msg_id"].as_str().unwrap().len(), 32);
    t.shutdown().await;
}

#[tokio::test]
async fn malformed_input_is_survived_and_duplicates_dropped() {
    let Some(url) = live_broker() else { return };
    let t = transport(&url, &[], &[]);
    let topic = uniq("bad");
    let (srv, ep) = start_server(&t, "h1", &[&topic]).await;
    let (_conn, ch) = raw_channel().await;
    let rk = format!("{topic}.h1");
    let publish = |body: Vec<u8>| {
        let ch = ch.clone();
        let rk = rk.clone();
        async move {
            ch.basic_publish(
                "nova".into(),
                rk.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    // garbage, non-object JSON, bad inner message
    publish(b"not json at all".to_vec()).await;
    publish(b"[1, 2]".to_vec()).await;
    publish(br#"{"oslo.version": "2.0", "oslo.message": "{broken"}"#.to_vec()).await;

    // a call with an envelope version we do not speak gets a failure reply
    let reply_q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let inner = json!({"method": "add", "args": {}, "version": "6.0", "_msg_id": "m-bad",
                       "_reply_q": reply_q.name().as_str(), "_timeout": null, "_unique_id": "u-bad"});
    let body = json!({"oslo.version": "3.0", "oslo.message": inner.to_string()}).to_string();
    publish(body.into_bytes()).await;
    let mut consumer = ch
        .basic_consume(
            reply_q.name().clone(),
            "t".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    use futures::StreamExt;
    let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let reply = corral::rpc::envelope::deserialize_msg(&d.data).unwrap();
    assert_eq!(reply["_msg_id"], json!("m-bad"));
    assert_eq!(reply["ending"], json!(true));
    let f = corral::rpc::Failure::from_json_str(reply["failure"].as_str().unwrap()).unwrap();
    assert_eq!(f.class, "UnsupportedRpcEnvelopeVersion");
    assert_eq!(f.kwargs.get("version"), Some(&json!("3.0")));

    // the same _unique_id twice: handled once
    let dup = json!({"method": "record", "args": {"tag": "dup"}, "version": "6.0", "_unique_id": "same-id"});
    let body = corral::rpc::envelope::serialize_msg(dup.as_object().unwrap());
    publish(body.clone()).await;
    publish(body).await;

    let c = client(&t, &topic, Some("h1"));
    assert_eq!(
        c.call(&ctx(), "add", args(json!({"a": 1, "b": 2})))
            .await
            .unwrap(),
        json!(3)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*ep.records.lock().unwrap(), vec![json!("dup")]);
    srv.stop().await;
    t.shutdown().await;
    delete_topic_queues(&topic, &["h1"]).await;
}

#[tokio::test]
async fn fanout_and_several_topics() {
    let Some(url) = live_broker() else { return };
    let t = transport(&url, &[], &[]);
    let topic = uniq("fan");
    let alt = format!("{topic}-alt");
    let (s1, e1) = start_server(&t, "h1", &[&topic, &alt]).await;
    let (s2, e2) = start_server(&t, "h2", &[&topic]).await;
    assert_eq!(
        client(&t, &alt, Some("h1"))
            .call(&ctx(), "whoami", args(json!({})))
            .await
            .unwrap(),
        json!(alt)
    );
    client(&t, &topic, None)
        .fanout_cast(&ctx(), "record", args(json!({"tag": "all"})))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (e1.records.lock().unwrap().is_empty() || e2.records.lock().unwrap().is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*e1.records.lock().unwrap(), vec![json!("all")]);
    assert_eq!(*e2.records.lock().unwrap(), vec![json!("all")]);
    // fanout queues are deleted on stop, as oslo does on close
    let fanout: Vec<String> = s1.fanout_queues().iter().map(|s| s.to_string()).collect();
    s1.stop().await;
    s2.stop().await;
    let (_conn, ch) = raw_channel().await;
    let r = ch
        .queue_declare(
            fanout[0].as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(r.is_err(), "fanout queue {} still exists", fanout[0]);
    t.shutdown().await;
    delete_topic_queues(&topic, &["h1", "h2"]).await;
    delete_topic_queues(&alt, &["h1"]).await;
}

#[tokio::test]
async fn durable_mismatch_falls_back_to_non_durable() {
    let Some(url) = live_broker() else { return };
    let exchange = uniq("ctl");
    let (_conn, ch) = raw_channel().await;
    // someone created the control exchange non-durable
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let t = transport(
        &url,
        &[("amqp_durable_queues", "true")],
        &[("control_exchange", &exchange)],
    );
    let topic = uniq("durable");
    let (srv, _ep) = start_server(&t, "h1", &[&topic]).await;
    assert_eq!(
        client(&t, &topic, Some("h1"))
            .call(&ctx(), "add", args(json!({"a": 2, "b": 2})))
            .await
            .unwrap(),
        json!(4)
    );
    srv.stop().await;
    t.shutdown().await;
    for q in [topic.clone(), format!("{topic}.h1")] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

/// A stopping server waits for the requests it runs, but no longer than
/// `graceful_shutdown_timeout`.
#[tokio::test]
async fn stop_waits_for_running_requests_up_to_graceful_shutdown_timeout() {
    let Some(url) = live_broker() else { return };
    let t = transport(&url, &[], &[("graceful_shutdown_timeout", "2")]);
    let topic = uniq("graceful");
    let (srv, _ep) = start_server(&t, "h1", &[&topic]).await;
    let c = client(&t, &topic, Some("h1"));
    c.cast(&ctx(), "sleep", args(json!({"seconds": 600})))
        .await
        .unwrap();
    // the cast is running once a call behind it is answered
    assert_eq!(
        c.call(&ctx(), "add", args(json!({"a": 1, "b": 2})))
            .await
            .unwrap(),
        json!(3)
    );
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), srv.stop())
        .await
        .expect("stop waited past graceful_shutdown_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    t.shutdown().await;
    delete_topic_queues(&topic, &["h1"]).await;
}

/// Without a broker the live tests skip, except in CI, where they fail.
#[test]
fn a_missing_broker_fails_the_tests_in_ci() {
    // nothing listens on port 1
    let url = "rabbit://guest:guest@127.0.0.1:1/";
    assert_eq!(live_broker_at(url, false), None);
    let in_ci = std::panic::catch_unwind(|| live_broker_at(url, true));
    assert!(in_ci.is_err(), "CI=true and no broker must fail the test");
}
