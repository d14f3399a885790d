//! Per-key async locks (one per instance, one per image download) whose map holds
//! only the keys someone is using: an entry goes when its last user is done, so the
//! map does not grow with every instance the host ever saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Entry = Arc<tokio::sync::Mutex<()>>;

/// A map of async locks by key, pruned as they are released.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Entry>>,
}

impl KeyedLocks {
    pub fn new() -> KeyedLocks {
        KeyedLocks::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// The lock of `key`: `handle.lock().await` takes it. The entry stays in the map
    /// while any handle of it exists.
    pub fn handle(&self, key: &str) -> LockHandle<'_> {
        let mutex = self.map().entry(key.to_string()).or_default().clone();
        LockHandle {
            locks: self,
            key: key.to_string(),
            mutex,
        }
    }

    /// Keys with a live handle.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One user of a key's lock; removes the key from the map when it is the last.
#[derive(Debug)]
pub struct LockHandle<'a> {
    locks: &'a KeyedLocks,
    key: String,
    mutex: Entry,
}

impl LockHandle<'_> {
    /// Wait for the lock.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.mutex.lock().await
    }
}

impl Drop for LockHandle<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        // handles are only made under the map's lock: the map's reference and
        // this one mean nobody else holds or waits for the lock
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::ptr_eq(m, &self.mutex) && Arc::strong_count(m) == 2)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_map_is_empty_once_no_one_holds_a_lock() {
        let locks = Arc::new(KeyedLocks::new());
        let inside: Arc<Vec<AtomicUsize>> =
            Arc::new((0..200).map(|_| AtomicUsize::new(0)).collect());
        let mut tasks = Vec::new();
        // 200 instances, several operations on each at once
        for i in 0..200 {
            for _ in 0..3 {
                let (locks, inside) = (locks.clone(), inside.clone());
                tasks.push(tokio::spawn(async move {
                    let h = locks.handle(&format!("instance-{i}"));
                    let _g = h.lock().await;
                    // one at a time per key
                    assert_eq!(inside[i].fetch_add(1, Ordering::SeqCst), 0);
                    tokio::task::yield_now().await;
                    inside[i].fetch_sub(1, Ordering::SeqCst);
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(locks.is_empty(), "{} entries left", locks.len());
    }

    #[tokio::test]
    async fn a_key_is_exclusive_while_held_and_kept_while_waited_for() {
        let locks = Arc::new(KeyedLocks::new());
        let h = locks.handle("a");
        let g = h.lock().await;
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let h = l2.handle("a");
            let _g = h.lock().await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(g);
        drop(h);
        // the waiter's handle keeps the entry (and the same mutex) alive
        waiter.await.unwrap();
        assert!(locks.is_empty());
        // a waiter that gives up leaves nothing behind
        let h = locks.handle("b");
        let g = h.lock().await;
        let l3 = locks.clone();
        let r = tokio::time::timeout(Duration::from_millis(20), async move {
            let h = l3.handle("b");
            let _g = h.lock().await;
        })
        .await;
        assert!(r.is_err());
        drop(g);
        drop(h);
        assert!(locks.is_empty());
    }
}
