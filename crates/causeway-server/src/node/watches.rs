//! Long-poll watches waiting on this replica: who waits for which key, and waking them
//! when a commit touches it.
//!
//! Invariant (no lost wake-up): a waiter takes a [`Watch`] and enables its
//! `Notified` future *before* it reads the key's state; every commit that changes the
//! key after that read wakes it, because the committer calls [`Watches::touched`]
//! after installing the new versions. When no one watches, a commit pays one atomic
//! load ([`Watches::any`]).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Watches {
    /// Live [`Watch`] handles.
    active: AtomicUsize,
    /// Per watched key: its notifier and how many handles hold it.
    keys: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

impl Watches {
    /// Registers interest in `key` until the handle is dropped.
    pub fn watch(self: &Arc<Self>, key: &str) -> Watch {
        let notify = {
            let mut keys = self.keys.lock();
            let entry = keys
                .entry(key.to_string())
                .or_insert_with(|| (Arc::new(Notify::new()), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        self.active.fetch_add(1, Ordering::SeqCst);
        Watch {
            watches: self.clone(),
            key: key.to_string(),
            notify,
        }
    }

    /// True while anyone waits (a commit then lists the keys it touched).
    pub fn any(&self) -> bool {
        self.active.load(Ordering::SeqCst) > 0
    }

    /// Wakes every waiter of any of `keys` (called after a commit installed them).
    pub fn touched<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let watched = self.keys.lock();
        for k in keys {
            if let Some((n, _)) = watched.get(k) {
                n.notify_waiters();
            }
        }
    }

    /// Wakes every waiter (the view changed: keys may have moved).
    pub fn wake_all(&self) {
        for (n, _) in self.keys.lock().values() {
            n.notify_waiters();
        }
    }

    /// Keys with at least one waiter (for tests and metrics).
    pub fn len(&self) -> usize {
        self.keys.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One waiter's registration; dropping it forgets the key when no one else waits.
pub struct Watch {
    watches: Arc<Watches>,
    key: String,
    notify: Arc<Notify>,
}

impl Watch {
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.watches.active.fetch_sub(1, Ordering::SeqCst);
        let mut keys = self.watches.keys.lock();
        if let Some(e) = keys.get_mut(&self.key) {
            e.1 -= 1;
            if e.1 == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_touch_after_the_wait_began_wakes_the_waiter() {
        let w = Arc::new(Watches::default());
        let a = w.watch("a");
        let notified = a.notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // The commit happens between the waiter's read and its await: not lost.
        w.touched(["b", "a"]);
        tokio::time::timeout(Duration::from_secs(1), notified)
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn other_keys_do_not_wake_and_handles_clean_up() {
        let w = Arc::new(Watches::default());
        let a1 = w.watch("a");
        let a2 = w.watch("a");
        assert_eq!(w.len(), 1);
        {
            let notified = a1.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            w.touched(["b"]);
            assert!(
                tokio::time::timeout(Duration::from_millis(50), &mut notified)
                    .await
                    .is_err(),
                "woken by another key"
            );
        }
        drop(a1);
        assert_eq!(w.len(), 1, "a2 still waits");
        drop(a2);
        assert!(w.is_empty());
        assert_eq!(w.active.load(Ordering::SeqCst), 0);
    }
}
