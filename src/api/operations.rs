//! Background operations (`/1.0/operations/{id}`): long work runs in a task
//! and is polled or waited for, as in LXD.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::types::Operation;

/// Finished operations are kept this long for late readers.
const KEEP_FINISHED: Duration = Duration::from_secs(300);

struct Entry {
    op: Operation,
    done: watch::Receiver<bool>,
}

/// The operations of this daemon run (in memory, as in LXD).
#[derive(Clone, Default)]
pub struct Operations {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

fn now() -> String {
    crate::store::Store::timestamp()
}

impl Operations {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Starts `work` in the background and returns its operation.
    pub fn spawn<F>(
        &self,
        description: &str,
        resources: BTreeMap<String, Vec<String>>,
        work: F,
    ) -> Operation
    where
        F: Future<Output = Result<Option<serde_json::Value>, String>> + Send + 'static,
    {
        let id = uuid::Uuid::new_v4().to_string();
        let ts = now();
        let op = Operation {
            id: id.clone(),
            class: "task".into(),
            description: description.into(),
            created_at: ts.clone(),
            updated_at: ts,
            status: "Running".into(),
            status_code: 103,
            resources,
            metadata: None,
            may_cancel: false,
            err: String::new(),
        };
        let (tx, rx) = watch::channel(false);
        self.with(|m| {
            m.insert(
                id.clone(),
                Entry {
                    op: op.clone(),
                    done: rx,
                },
            );
        });
        let ops = self.clone();
        tokio::spawn(async move {
            let result = work.await;
            ops.with(|m| {
                if let Some(e) = m.get_mut(&id) {
                    e.op.updated_at = now();
                    match result {
                        Ok(meta) => {
                            e.op.status = "Success".into();
                            e.op.status_code = 200;
                            e.op.metadata = meta;
                        }
                        Err(err) => {
                            e.op.status = "Failure".into();
                            e.op.status_code = 400;
                            e.op.err = err;
                        }
                    }
                }
            });
            let _ = tx.send(true);
            tokio::time::sleep(KEEP_FINISHED).await;
            ops.with(|m| m.remove(&id));
        });
        op
    }

    /// Sets the metadata of a running operation (its progress); false when
    /// it is gone or has ended.
    pub fn set_running_metadata(&self, id: &str, metadata: serde_json::Value) -> bool {
        self.with(|m| match m.get_mut(id) {
            Some(e) if e.op.status_code == 103 => {
                e.op.metadata = Some(metadata);
                e.op.updated_at = now();
                true
            }
            _ => false,
        })
    }

    /// Whether the operation is still running.
    pub fn is_running(&self, id: &str) -> bool {
        self.with(|m| m.get(id).is_some_and(|e| e.op.status_code == 103))
    }

    pub fn get(&self, id: &str) -> Option<Operation> {
        self.with(|m| m.get(id).map(|e| e.op.clone()))
    }

    pub fn list(&self) -> Vec<Operation> {
        let mut ops: Vec<Operation> = self.with(|m| m.values().map(|e| e.op.clone()).collect());
        ops.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        ops
    }

    /// Waits until the operation ends or `timeout` passes; returns it as it is then.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<Operation> {
        let mut rx = self.with(|m| m.get(id).map(|e| e.done.clone()))?;
        let _ = tokio::time::timeout(timeout, rx.wait_for(|d| *d)).await;
        self.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn success_and_failure() {
        let ops = Operations::default();
        let a = ops.spawn("ok", BTreeMap::new(), async {
            Ok(Some(serde_json::json!({"x": 1})))
        });
        let b = ops.spawn("bad", BTreeMap::new(), async { Err("boom".to_string()) });
        let a = ops.wait(&a.id, Duration::from_secs(5)).await.unwrap();
        assert_eq!((a.status.as_str(), a.status_code), ("Success", 200));
        assert_eq!(a.metadata.unwrap()["x"], 1);
        let b = ops.wait(&b.id, Duration::from_secs(5)).await.unwrap();
        assert_eq!((b.status.as_str(), b.err.as_str()), ("Failure", "boom"));
        assert!(ops.wait("nope", Duration::from_millis(1)).await.is_none());
        assert_eq!(ops.list().len(), 2);
    }
}
