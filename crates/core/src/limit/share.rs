//! This pod's part of every workspace's limit when the fleet shares nothing but the
//! consumer group: the share of the source topics' partitions it owns.
//!
//! The shares of a group must sum to at most 1 at every instant *and in every window
//! the API counts*. So a revocation shrinks the share at once, before the partition is
//! handed over; an assignment grows it only one [`GROW_AFTER`] later, when the
//! previous owner's sends under its old, larger share have left every one-second
//! window.
//!
//! Its blind spot: the share follows partitions, not traffic. A workspace whose events
//! sit on a few partitions gets, on each pod, the share of *all* partitions that pod
//! owns — the pods without its traffic leave their part of its budget unused.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long after an assignment the share grows: the API's counting window.
pub(crate) const GROW_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    current: f64,
    /// The share once the pending growth takes effect, and when.
    grow: Option<(f64, Instant)>,
}

/// This pod's share of each workspace's limit, between 0 and 1.
#[derive(Debug)]
pub struct Share {
    fixed: bool,
    state: Mutex<State>,
}

impl Share {
    /// A share that never changes (`limits.mode = "local"`: every pod the whole limit).
    pub fn fixed(value: f64) -> Self {
        Share {
            fixed: true,
            state: Mutex::new(State {
                current: value,
                grow: None,
            }),
        }
    }

    /// A share that follows the partitions owned, starting with none.
    pub(crate) fn of_partitions() -> Self {
        Share {
            fixed: false,
            state: Mutex::new(State {
                current: 0.0,
                grow: None,
            }),
        }
    }

    /// The share at `now`.
    pub fn get(&self, now: Instant) -> f64 {
        let mut s = self.lock();
        if let Some((target, at)) = s.grow {
            if at <= now {
                s.current = target;
                s.grow = None;
            }
        }
        s.current
    }

    /// Partitions were revoked: `owned` of `total` remain. Shrinks at once.
    pub(crate) fn revoked(&self, owned: usize, total: usize) {
        if self.fixed {
            return;
        }
        let target = ratio(owned, total);
        let mut s = self.lock();
        s.current = s.current.min(target);
        if let Some((pending, at)) = s.grow {
            s.grow = (target > s.current).then_some((pending.min(target), at));
        }
    }

    /// Partitions were assigned at `now`: `owned` of `total` are this pod's. Grows
    /// [`GROW_AFTER`] later (shrinks at once if the total grew instead).
    pub(crate) fn assigned(&self, owned: usize, total: usize, now: Instant) {
        if self.fixed {
            return;
        }
        let target = ratio(owned, total);
        let mut s = self.lock();
        if target <= s.current {
            s.current = target;
            s.grow = None;
        } else {
            s.grow = Some((target, now + GROW_AFTER));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ratio(owned: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        (owned.min(total) as f64) / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shrinks_at_once_and_grows_a_window_later() {
        let share = Share::of_partitions();
        let t = Instant::now();
        assert_eq!(share.get(t), 0.0);
        share.assigned(8, 8, t);
        assert_eq!(
            share.get(t),
            0.0,
            "not before the previous owner's window passed"
        );
        assert_eq!(share.get(t + GROW_AFTER), 1.0);
        share.revoked(3, 8);
        assert_eq!(share.get(t + GROW_AFTER), 3.0 / 8.0);
        // Assigned more, then some revoked before the growth took effect.
        share.assigned(6, 8, t + 2 * GROW_AFTER);
        share.revoked(4, 8);
        assert_eq!(share.get(t + 2 * GROW_AFTER), 3.0 / 8.0);
        assert_eq!(share.get(t + 3 * GROW_AFTER), 4.0 / 8.0);
        share.revoked(0, 8);
        assert_eq!(share.get(t + 4 * GROW_AFTER), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_share_ignores_rebalances() {
        let share = Share::fixed(1.0);
        share.revoked(1, 8);
        share.assigned(1, 8, Instant::now());
        assert_eq!(share.get(Instant::now()), 1.0);
    }
}
