//! Where the compute manager's casts run: each on a task of its own, at most
//! `[DEFAULT] executor_thread_pool_size` at a time, tracked so that a shutdown
//! stops taking new ones and waits for the running ones, up to
//! `[DEFAULT] graceful_shutdown_timeout`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Runs casts with bounded concurrency and waits for them at shutdown.
#[derive(Debug)]
pub struct CastRunner {
    limit: usize,
    permits: Arc<Semaphore>,
    tasks: Mutex<JoinSet<()>>,
    closed: AtomicBool,
}

impl CastRunner {
    /// At most `limit` (at least 1) casts at once.
    pub fn new(limit: usize) -> CastRunner {
        let limit = limit.max(1);
        CastRunner {
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            tasks: Mutex::new(JoinSet::new()),
            closed: AtomicBool::new(false),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        match self.tasks.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        }
    }

    /// Waits for a free slot (so a flood of casts slows the RPC listener down rather
    /// than piling up tasks), then runs `work` on a task of its own. False, and
    /// `work` dropped, once the shutdown has begun.
    pub async fn spawn<F>(&self, work: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let mut tasks = self.tasks();
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        // reap the finished ones, so the set holds only running casts
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a cast task failed");
            }
        }
        tasks.spawn(async move {
            work.await;
            drop(permit);
        });
        true
    }

    /// Casts running now.
    pub fn running(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Takes no more casts and waits for the running ones for at most `timeout`
    /// (`None`: as long as they take); those still running then are aborted. Returns
    /// how many were aborted.
    pub async fn shutdown(&self, timeout: Option<Duration>) -> usize {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        let mut set = std::mem::take(&mut *self.tasks());
        if !set.is_empty() {
            tracing::info!(running = set.len(), "waiting for running casts to finish");
        }
        let finished = {
            let wait = async {
                while let Some(done) = set.join_next().await {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "a cast task failed");
                    }
                }
            };
            match timeout {
                Some(t) => tokio::time::timeout(t, wait).await.is_ok(),
                None => {
                    wait.await;
                    true
                }
            }
        };
        if finished {
            return 0;
        }
        let left = set.len();
        tracing::warn!(
            aborted = left,
            "casts still running at the end of graceful_shutdown_timeout are abandoned"
        );
        set.shutdown().await;
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn at_most_limit_casts_run_at_once() {
        let runner = Arc::new(CastRunner::new(3));
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let (now, peak, done) = (now.clone(), peak.clone(), done.clone());
            assert!(
                runner
                    .spawn(async move {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        done.fetch_add(1, Ordering::SeqCst);
                    })
                    .await
            );
            assert!(runner.running() <= 3);
        }
        assert_eq!(runner.shutdown(None).await, 0);
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        // finished tasks do not pile up in the set
        assert!(runner.tasks().is_empty());
    }

    #[tokio::test]
    async fn shutdown_waits_for_running_casts_and_refuses_new_ones() {
        let runner = CastRunner::new(4);
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        runner
            .spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                d.store(true, Ordering::SeqCst);
            })
            .await;
        assert_eq!(runner.shutdown(Some(Duration::from_secs(10))).await, 0);
        assert!(
            done.load(Ordering::SeqCst),
            "shutdown returned before the cast ended"
        );
        assert!(!runner.spawn(async {}).await);
    }

    #[tokio::test]
    async fn shutdown_gives_up_after_the_timeout() {
        let runner = CastRunner::new(4);
        runner
            .spawn(tokio::time::sleep(Duration::from_secs(3600)))
            .await;
        let started = tokio::time::Instant::now();
        assert_eq!(runner.shutdown(Some(Duration::from_millis(200))).await, 1);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
