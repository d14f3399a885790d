//! External events from Neutron (`network-vif-plugged`, through nova-api's
//! `external_instance_event`): the waiters a build registers before it plugs, and
//! the wait with its deadline, as nova-compute's `InstanceEvents` and
//! `wait_for_instance_event`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::nova::objects::network_model::NetworkInfo;

/// The ports of `info` that have not reported active: the
/// `network-vif-plugged` events to wait for (`_get_neutron_events`).
pub fn events_to_wait_for(info: &NetworkInfo) -> Vec<String> {
    info.0
        .iter()
        .filter(|v| v.active.get() == Some(&false))
        .filter_map(|v| v.id.as_str())
        .map(|id| format!("network-vif-plugged-{id}"))
        .collect()
}

/// How an awaited external event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Completed,
    Failed,
}

type Waiters = HashMap<String, HashMap<String, tokio::sync::oneshot::Sender<EventStatus>>>;

/// `InstanceEvents`: waiters for external events, per instance, by
/// `name-tag`. Registered before the action that causes the event, so an
/// event that comes back quickly is not lost.
#[derive(Default, Clone)]
pub struct InstanceEvents {
    waiters: Arc<Mutex<Waiters>>,
}

impl InstanceEvents {
    /// Registers `keys` for `uuid`; the receivers are woken by [`Self::pop`].
    pub fn prepare(
        &self,
        uuid: &str,
        keys: &[String],
    ) -> Vec<(String, tokio::sync::oneshot::Receiver<EventStatus>)> {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let entry = w.entry(uuid.to_string()).or_default();
        keys.iter()
            .map(|k| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                entry.insert(k.clone(), tx);
                (k.clone(), rx)
            })
            .collect()
    }

    /// Wakes the waiter of `key`; false when nobody waits for it.
    pub fn pop(&self, uuid: &str, key: &str, status: EventStatus) -> bool {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = w.get_mut(uuid) else {
            return false;
        };
        let tx = entry.remove(key);
        if entry.is_empty() {
            w.remove(uuid);
        }
        tx.is_some_and(|tx| tx.send(status).is_ok())
    }

    /// Drops every waiter of `uuid` (`clear_events_for_instance`).
    pub fn clear(&self, uuid: &str) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        w.remove(uuid);
    }
}

/// The outcome of waiting for events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Every event came, completed.
    Done,
    /// An event came with status `failed`.
    Failed(String),
    /// Not all came in time: the keys still missing.
    TimedOut(Vec<String>),
}

/// Waits for every receiver, at most `timeout` in all.
pub async fn wait_for(
    waiters: Vec<(String, tokio::sync::oneshot::Receiver<EventStatus>)>,
    timeout: std::time::Duration,
) -> WaitOutcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut missing = Vec::new();
    for (key, rx) in waiters {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(EventStatus::Completed)) => {}
            Ok(Ok(EventStatus::Failed)) => return WaitOutcome::Failed(key),
            Ok(Err(_)) | Err(_) => missing.push(key),
        }
    }
    if missing.is_empty() {
        WaitOutcome::Done
    } else {
        WaitOutcome::TimedOut(missing)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::nova::fields::JsonString;

    #[tokio::test]
    async fn waiters_see_their_events_and_time_out_without() {
        let ev = InstanceEvents::default();
        let keys = vec![
            "network-vif-plugged-a".to_string(),
            "network-vif-plugged-b".to_string(),
        ];
        let w = ev.prepare("u1", &keys);
        assert!(ev.pop("u1", "network-vif-plugged-a", EventStatus::Completed));
        assert!(!ev.pop("u2", "network-vif-plugged-b", EventStatus::Completed));
        assert!(!ev.pop("u1", "network-vif-plugged-c", EventStatus::Completed));
        let out = wait_for(w, std::time::Duration::from_millis(50)).await;
        assert_eq!(
            out,
            WaitOutcome::TimedOut(vec!["network-vif-plugged-b".into()])
        );
        let w = ev.prepare("u1", &keys[..1]);
        assert!(ev.pop("u1", "network-vif-plugged-a", EventStatus::Failed));
        let out = wait_for(w, std::time::Duration::from_secs(5)).await;
        assert_eq!(out, WaitOutcome::Failed("network-vif-plugged-a".into()));
        let w = ev.prepare("u1", &keys[..1]);
        ev.clear("u1");
        assert!(!ev.pop("u1", "network-vif-plugged-a", EventStatus::Completed));
        drop(w);
    }

    #[test]
    fn only_ports_not_active_are_waited_for() {
        let text = json!([{"id": "a", "active": false}, {"id": "b", "active": true}, {"id": "c"}]);
        let info = JsonString::<NetworkInfo>::parse(&text.to_string())
            .unwrap()
            .value;
        assert_eq!(events_to_wait_for(&info), ["network-vif-plugged-a"]);
    }
}
