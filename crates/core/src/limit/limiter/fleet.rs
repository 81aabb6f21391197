//! The limiter's fleet side: slots of the workspace's shared timeline, leased from
//! Redis a few at a time and spaced by what every pod reported.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{lock, Limiter, State, Workspace};
use crate::limit::fleet_store::{
    Fleet, Spacing, FLEET_HEADROOM, LATE_LIMIT, LEASE_SLOTS, MAX_HORIZON,
};
use crate::limit::pacer::{Pace, Ticket};

impl Limiter {
    /// How this pod asks for slots of the fleet's timeline for `st` at `now`: the
    /// learned rate with the fleet's headroom, and the longest its sends waited lately
    /// between their slot and their bytes leaving (the fleet spaces every pod's slots
    /// by the largest such wait any pod reported). Only sends count: a slot woken later
    /// than `LATE_LIMIT` is dropped, never sent, so a stall that sent nothing widens
    /// nothing.
    pub(super) fn fleet_spacing(&self, st: &State, now: Instant) -> Spacing {
        let pace = Pace {
            per_second: st.learned.rate(now - self.origin),
            burst: 1,
            headroom: self.headroom * FLEET_HEADROOM,
            jitter: Duration::ZERO,
        };
        Spacing {
            interval: pace.interval(),
            margin: st.departures.recent(now),
            per_window: pace.window().0 as u32,
        }
    }

    /// A slot of the fleet's timeline, leased from Redis, and when it was due. `None`
    /// if Redis failed (the caller falls back) or a pause began.
    pub(super) async fn take_from_fleet(
        &self,
        ws: &Workspace,
        fleet: &Fleet,
    ) -> Option<(Ticket, Instant, OwnedSemaphorePermit)> {
        loop {
            let mut leased = ws.leased.lock().await;
            let now = Instant::now();
            while leased.front().is_some_and(|s| now > *s + LATE_LIMIT) {
                leased.pop_front();
            }
            if let Some(slot) = leased.pop_front() {
                drop(leased);
                tokio::time::sleep_until(slot).await;
                // The global in-flight slot only now that the send is due.
                let permit = self.in_flight_slot().await;
                let now = Instant::now();
                if now > slot + LATE_LIMIT {
                    continue; // too late for it: dropped, never sent late
                }
                let mut st = lock(&ws.state);
                if st.learned.paused(now - self.origin).is_some() {
                    return None;
                }
                // Dated under the lock, in order; the wait is counted from the slot.
                return Some((st.pacer.record(Instant::now()), slot, permit));
            }
            let (spacing, accepted) = {
                let mut st = lock(&ws.state);
                let spacing = self.fleet_spacing(&st, now);
                (spacing, std::mem::take(&mut st.unreported))
            };
            let horizon = (spacing.interval * LEASE_SLOTS * 4).min(MAX_HORIZON);
            match fleet
                .lease(&ws.rate.site, spacing, LEASE_SLOTS, horizon, accepted)
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
