//! The broker goes away (`rabbitmqctl stop_app`) and comes back: servers reconnect,
//! re-declare and consume again, the publisher and the reply queue recover, and calls
//! carry on. The broker is always restarted, also when the test fails.
//!
//! Skips when rabbitmqctl is missing or `CORRAL_SKIP_BROKER_RESTART` is set (other
//! users of a shared broker see it restart).

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

#[tokio::test]
async fn reconnects_after_broker_restart() {
    let Some(url) = live_broker() else { return };
    if std::env::var_os("CORRAL_SKIP_BROKER_RESTART").is_some() {
        eprintln!("skipping: CORRAL_SKIP_BROKER_RESTART is set");
        return;
    }
    if !rabbitmqctl(&["-q", "status"]) {
        eprintln!("skipping: rabbitmqctl cannot control the local broker");
        return;
    }
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
