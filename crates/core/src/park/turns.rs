//! Turns at reading the parking topic: a pod runs at most `kafka.park_readers` parked-
//! events readers (each a Kafka consumer with its own threads), so 10 000 workspaces
//! parked at once cost that many readers, not 10 000. A parked workspace asks for a
//! turn and gets one in the order it asked; while another waits, a workspace that has
//! read for [`TURN`] hands its reader on (see `LaneParking::step_aside`) and asks again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// How long a workspace reads before it hands its reader on to one that waits.
pub(crate) const TURN: Duration = Duration::from_secs(10);

/// The pod's readers: at most `size` at once, given in the order asked.
#[derive(Debug, Clone)]
pub(crate) struct ReaderTurns {
    size: usize,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

/// A workspace's place in the queue for a reader.
#[derive(Debug)]
pub(crate) struct Asking {
    granted: oneshot::Receiver<Turn>,
    task: tokio::task::JoinHandle<()>,
}

/// One workspace's turn at reading: a reader slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    _permit: OwnedSemaphorePermit,
    since: tokio::time::Instant,
}

/// Counts a workspace as waiting while it lives.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ReaderTurns {
    /// At most `size` readers at once (at least one).
    pub(crate) fn new(size: usize) -> Self {
        ReaderTurns {
            size: size.max(1),
            permits: Arc::new(Semaphore::new(size.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Joins the queue: [`Asking::granted`] says when the turn has come.
    pub(crate) fn ask(&self) -> Asking {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(self.waiting.clone());
        let permits = self.permits.clone();
        let (tx, granted) = oneshot::channel();
        let task = tokio::spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            drop(waiting);
            // Refused only if the asker is gone: the permit goes back with it.
            let _ = tx.send(Turn {
                _permit: permit,
                since: tokio::time::Instant::now(),
            });
        });
        Asking { granted, task }
    }

    /// Whether some workspace waits for a reader.
    pub(crate) fn anyone_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Readers running now.
    pub(crate) fn active(&self) -> usize {
        self.size - self.permits.available_permits()
    }

    /// Workspaces waiting for a reader.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

impl Asking {
    /// The turn, if it has come.
    pub(crate) fn granted(&mut self) -> Option<Turn> {
        self.granted.try_recv().ok()
    }
}

impl Drop for Asking {
    /// Leaves the queue; a turn granted and not taken goes back.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Turn {
    /// Whether it has lasted [`TURN`].
    pub(crate) fn is_over(&self) -> bool {
        self.since.elapsed() >= TURN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn readers_are_given_in_the_order_asked_and_no_more_than_the_pool_holds() {
        let turns = ReaderTurns::new(1);
        let mut first = turns.ask();
        settle().await;
        let mut second = turns.ask();
        let mut third = turns.ask();
        settle().await;
        let one = first.granted().expect("a free reader is given at once");
        assert_eq!(turns.active(), 1);
        assert!(second.granted().is_none() && third.granted().is_none());
        assert_eq!(turns.waiting(), 2);
        assert!(!one.is_over());
        tokio::time::advance(TURN).await;
        assert!(one.is_over());
        drop(one);
        settle().await;
        let two = second.granted().expect("next in line");
        assert!(third.granted().is_none());
        assert_eq!(turns.waiting(), 1);
        drop(two);
        settle().await;
        assert!(third.granted().is_some());
        assert!(!turns.anyone_waiting());
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_granted_to_one_who_left_the_queue_goes_back() {
        let turns = ReaderTurns::new(1);
        let mut holder = turns.ask();
        settle().await;
        let held = holder.granted().unwrap();
        let gone = turns.ask();
        let next = turns.ask();
        settle().await;
        assert_eq!(turns.waiting(), 2);
        // One leaves the queue before its turn, and one is granted and never takes it.
        drop(gone);
        settle().await;
        assert_eq!(turns.waiting(), 1);
        drop(held);
        settle().await;
        let granted_not_taken = next;
        drop(granted_not_taken);
        let mut last = turns.ask();
        settle().await;
        assert!(last.granted().is_some(), "the pool's one reader came back");
    }
}
