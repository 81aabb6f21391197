//! Taking a slot of the fleet's timeline: slots leased from the workspace's GCRA in
//! Redis a few at a time, each used at its instant or dropped if woken too late, and
//! what the fleet has learned (a cut after a 429) copied into this pod's state.

use std::time::Duration;

use tokio::time::Instant;

use super::super::pacer::{Pace, Ticket};
use super::super::shared::{Fleet, FLEET_HEADROOM, LATE_LIMIT, LEASE_SLOTS, MAX_HORIZON};
use super::{lock, Limiter, State, Workspace};

impl Limiter {
    /// The interval between two slots of the fleet's timeline for `st` at `now`: the
    /// learned rate with the fleet's margin. No lateness margin: the timeline is one
    /// for every pod, and a slot woken too late is dropped instead (`LATE_LIMIT`).
    fn fleet_interval(&self, st: &State, now: Instant) -> Duration {
        Pace {
            per_second: st.learned.rate(now - self.origin),
            burst: 1,
            headroom: self.headroom * FLEET_HEADROOM,
            jitter: Duration::ZERO,
        }
        .interval()
    }

    /// A slot of the fleet's timeline, leased from Redis. `None` if Redis failed (the
    /// caller falls back) or a pause began.
    pub(super) async fn take_from_fleet(&self, ws: &Workspace, fleet: &Fleet) -> Option<Ticket> {
        loop {
            let mut leased = ws.leased.lock().await;
            let now = Instant::now();
            while leased.front().is_some_and(|s| now > *s + LATE_LIMIT) {
                leased.pop_front();
            }
            if let Some(slot) = leased.pop_front() {
                drop(leased);
                tokio::time::sleep_until(slot).await;
                let now = Instant::now();
                if now > slot + LATE_LIMIT {
                    continue; // woke too late for it: dropped, never sent late
                }
                let mut st = lock(&ws.state);
                if st.learned.paused(now - self.origin).is_some() {
                    return None;
                }
                return Some(st.pacer.record(Instant::now())); // dated under the lock, in order
            }
            let (interval, accepted) = {
                let mut st = lock(&ws.state);
                let interval = self.fleet_interval(&st, now);
                (interval, std::mem::take(&mut st.unreported))
            };
            let horizon = (interval * LEASE_SLOTS * 4).min(MAX_HORIZON);
            match fleet
                .lease(&ws.rate.site, interval, LEASE_SLOTS, horizon, accepted)
                .await
            {
                Ok(lease) => {
                    {
                        let mut st = lock(&ws.state);
                        st.learned =
                            fleet.to_local(&lease.learned, ws.rate.per_second, self.origin);
                        st.fleet_cut = lease.learned.cut_at;
                        st.fleet_accepted = lease.accepted_per_s;
                    }
                    if lease.slots.is_empty() {
                        drop(leased);
                        let now = Instant::now();
                        let at = lease.retry_at.clamp(now, now + Duration::from_secs(1));
                        tokio::time::sleep_until(at).await;
                    } else {
                        leased.extend(lease.slots);
                    }
                }
                Err(_) => {
                    lock(&ws.state).unreported += accepted;
                    leased.clear();
                    return None;
                }
            }
        }
    }
}
