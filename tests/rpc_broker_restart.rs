//! The broker goes away (`rabbitmqctl stop_app`) and comes back: servers reconnect,
//! re-declare and consume again, the publisher and the reply queue recover, and calls
//! carry on. The broker is always restarted, also when the test fails.
//!
//! Skips when rabbitmqctl is missing or `CORRAL_SKIP_BROKER_RESTART` is set (other
//! users of a shared broker see it restart); under `CI=true` a missing broker or
//! rabbitmqctl is a failure, only the explicit `CORRAL_SKIP_BROKER_RESTART` skips.

mod rpc_support;
use rpc_support as common;

use std::process::Command;
use std::time::Duration;

use common::*;
use corral::rpc::{RpcClient, Target};
use serde_json::json;

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Starts the app again when dropped, whatever happened.
struct RestoreBroker;

impl Drop for RestoreBroker {
    fn drop(&mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    }
}

/// The broker url when this machine's broker may be restarted by the test.
fn restartable_broker() -> Option<String> {
    let url = live_broker()?;
    if std::env::var_os("CORRAL_SKIP_BROKER_RESTART").is_some() {
        eprintln!("skipping: CORRAL_SKIP_BROKER_RESTART is set");
        return None;
    }
    if !rabbitmqctl(&["-q", "status"]) {
        skip_or_fail("rabbitmqctl cannot control the local broker", in_ci());
        return None;
    }
    Some(url)
}

/// The restarts of the tests of this file, one at a time.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn reconnects_after_broker_restart() {
    let Some(url) = restartable_broker() else {
        return;
    };
    let _one_restart_at_a_time = BROKER.lock().await;
    let t = transport(&url, &[("kombu_reconnect_delay", "0.5")], &[]);
    let topic = uniq("restart");
    let (srv, ep) = start_server(&t, "h1", &[&topic, &format!("{topic}-alt")]).await;
    let c = RpcClient::new(
        t.clone(),
        Target::new(&topic).with_server("h1").with_version("6.0"),
    )
    .with_timeout(Duration::from_secs(60));
    assert_eq!(
        c.call(&ctx(), "add", args(json!({"a": 1, "b": 1})))
            .await
            .unwrap(),
        json!(2)
    );

    {
        let _restore = RestoreBroker;
        assert!(
            tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
                .await
                .unwrap(),
            "rabbitmqctl stop_app failed"
        );
        let down_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while srv.is_consuming() && tokio::time::Instant::now() < down_deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !srv.is_consuming(),
            "server did not notice the broker going away"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        // _restore starts the app again here
    }
    tokio::task::spawn_blocking(|| rabbitmqctl(&["await_startup"]))
        .await
        .unwrap();

    assert!(
        srv.wait_consuming(Duration::from_secs(60)).await,
        "server did not consume again"
    );
    // the same server, the same process reply queue, the same client
    assert_eq!(
        c.call(&ctx(), "add", args(json!({"a": 2, "b": 3})))
            .await
            .unwrap(),
        json!(5)
    );
    c.cast(&ctx(), "record", args(json!({"tag": "after-restart"})))
        .await
        .unwrap();
    let alt = RpcClient::new(
        t.clone(),
        Target::new(&format!("{topic}-alt"))
            .with_server("h1")
            .with_version("6.0"),
    )
    .with_timeout(Duration::from_secs(30));
    assert_eq!(
        alt.call(&ctx(), "whoami", args(json!({}))).await.unwrap(),
        json!(format!("{topic}-alt"))
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ep.records.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*ep.records.lock().unwrap(), vec![json!("after-restart")]);
    srv.stop().await;
    t.shutdown().await;
    delete_topic_queues(&topic, &["h1"]).await;
    delete_topic_queues(&format!("{topic}-alt"), &["h1"]).await;
}

/// nova-compute's heartbeat after a broker restart: a call to the conductor (here a
/// second corral RPC server on its own connections, as in its own process) sent as
/// soon as the broker is back is answered within seconds, not after the 60 s call
/// timeout; and a call waiting for its reply when the broker goes away fails at once
/// with a clear error instead of waiting out its timeout.
#[tokio::test]
async fn call_after_broker_restart_is_answered_quickly() {
    let Some(url) = restartable_broker() else {
        return;
    };
    let _one_restart_at_a_time = BROKER.lock().await;
    let conductor_t = transport(&url, &[], &[]);
    let compute_t = transport(&url, &[], &[]);
    let topic = uniq("conductor");
    let (srv, _ep) = start_server(&conductor_t, "c1", &[&topic]).await;
    let c = RpcClient::new(compute_t.clone(), Target::new(&topic).with_version("6.0"))
        .with_timeout(Duration::from_secs(60));
    assert_eq!(
        c.call(&ctx(), "add", args(json!({"a": 1, "b": 1})))
            .await
            .unwrap(),
        json!(2)
    );

    let in_flight = {
        let c = c.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let r = c.call(&ctx(), "sleep", args(json!({"seconds": 3}))).await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during;
    {
        let _restore = RestoreBroker;
        assert!(
            tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
                .await
                .unwrap(),
            "rabbitmqctl stop_app failed"
        );
        let (r, waited) = tokio::time::timeout(Duration::from_secs(5), in_flight)
            .await
            .expect("a call in flight when the broker went away still waits for its reply")
            .unwrap();
        let err = r.expect_err("a call in flight during the drop cannot succeed");
        assert!(
            err.to_string()
                .contains("connection to the message broker lost"),
            "unclear error: {err}"
        );
        assert!(waited < Duration::from_secs(10), "{waited:?}");
        // a heartbeat due while the broker is away
        during = {
            let c = c.clone();
            tokio::spawn(async move { c.call(&ctx(), "add", args(json!({"a": 3, "b": 4}))).await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        // _restore starts the app again here
    }
    tokio::task::spawn_blocking(|| rabbitmqctl(&["await_startup"]))
        .await
        .unwrap();
    let back = tokio::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(15), during)
        .await
        .expect("the call sent while the broker was away got no reply 15 s after it came back")
        .unwrap();
    assert_eq!(r.unwrap(), json!(7));
    eprintln!(
        "call sent during the outage answered {:?} after the broker was back",
        back.elapsed()
    );

    // the heartbeat right after the broker is back
    let started = tokio::time::Instant::now();
    let r = c.call(&ctx(), "add", args(json!({"a": 2, "b": 3}))).await;
    let took = started.elapsed();
    eprintln!("first call after the restart answered in {took:?}");
    assert_eq!(r.unwrap(), json!(5));
    assert!(
        took < Duration::from_secs(15),
        "the first call after the restart took {took:?}"
    );
    srv.stop().await;
    conductor_t.shutdown().await;
    compute_t.shutdown().await;
    delete_topic_queues(&topic, &["c1"]).await;
}
