//! Parking: workspaces off the direct path, and their events written to and read
//! back from the parking topic.

use prometheus::{IntCounterVec, Opts, Registry};

use super::register::*;
use super::Metrics;

/// What parking reports.
#[derive(Clone, Debug)]
pub(super) struct ParkingMetrics {
    pub(super) parked: IntCounterVec,
    pub(super) parked_waiting: prometheus::IntGaugeVec,
    pub(super) workspace_parked: prometheus::IntGaugeVec,
    pub(super) readers_waiting: prometheus::IntGauge,
    pub(super) handed_on: IntCounterVec,
}

impl ParkingMetrics {
    /// Registers them in `r`.
    pub(super) fn new(r: &Registry) -> Self {
        ParkingMetrics {
            parked: counter_vec(
                r,
                "sluice_parked_events_total",
                "Events of parked workspaces written to the parking topic (kind=written) and \
                 read back into their lanes (kind=drained), and parked records deleted by the \
                 parking topic's retention before they were read back (kind=expired: lost).",
                &["workspace", "kind"],
            ),
            parked_waiting: registered(
                r,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "sluice_parked_events_waiting",
                        "Parking-topic records behind this pod's reader of a parked workspace.",
                    ),
                    &["workspace"],
                )
                .expect("valid metric"),
            ),
            workspace_parked: registered(
                r,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "sluice_workspace_parked",
                        "1 while a workspace is off the direct path (parked or returning) on \
                         this pod.",
                    ),
                    &["workspace"],
                )
                .expect("valid metric"),
            ),
            readers_waiting: registered(
                r,
                prometheus::IntGauge::new(
                    "sluice_park_readers_waiting",
                    "Parked workspaces waiting for a turn at reading their events back \
                     (kafka.park_readers run at once on a pod).",
                )
                .expect("valid metric"),
            ),
            handed_on: counter_vec(
                r,
                "sluice_park_reader_handed_on_total",
                "Times a parked workspace handed its reader on to one waiting, after its turn.",
                &["workspace"],
            ),
        }
    }
}

impl Metrics {
    /// A workspace could not keep up and is parked (logged once per episode).
    pub(crate) fn workspace_parked(&self, workspace: &str, share: usize) {
        let gauge = self
            .parking
            .workspace_parked
            .with_label_values(&[workspace]);
        if gauge.get() == 0 {
            tracing::warn!(
                workspace,
                share,
                "workspace parked: it holds its whole buffer share; its new events go to \
                 the parking topic and are read back at its pace"
            );
            gauge.set(1);
        }
    }

    /// A parked workspace is back on the direct path everywhere on this pod.
    pub(crate) fn workspace_returned(&self, workspace: &str) {
        tracing::info!(
            workspace,
            "workspace back on the direct path: its parked events are delivered"
        );
        self.parking
            .workspace_parked
            .with_label_values(&[workspace])
            .set(0);
        self.parking
            .parked_waiting
            .with_label_values(&[workspace])
            .set(0);
    }

    /// One event of a parked workspace was written to the parking topic.
    pub(crate) fn parked_written(&self, workspace: &str) {
        self.parking
            .parked
            .with_label_values(&[workspace, "written"])
            .inc();
    }

    /// One parked event was read back into its lane.
    pub(crate) fn parked_drained(&self, workspace: &str) {
        self.parking
            .parked
            .with_label_values(&[workspace, "drained"])
            .inc();
    }

    /// `records` parked records were deleted (the parking topic's retention) before
    /// they were read back.
    pub(crate) fn parked_expired(&self, workspace: &str, records: u64) {
        self.parking
            .parked
            .with_label_values(&[workspace, "expired"])
            .inc_by(records);
    }

    /// A parked workspace handed its reader on after its turn.
    pub(crate) fn reader_handed_on(&self, workspace: &str) {
        self.parking.handed_on.with_label_values(&[workspace]).inc();
    }

    /// Parked workspaces waiting for a reader.
    pub(crate) fn set_readers_waiting(&self, workspaces: usize) {
        self.parking.readers_waiting.set(workspaces as i64);
    }

    /// Records behind a parked workspace's reader.
    pub(crate) fn set_parked_waiting(&self, workspace: &str, records: i64) {
        self.parking
            .parked_waiting
            .with_label_values(&[workspace])
            .set(records);
    }

    /// Parked events written or drained so far (`kind`), for one workspace.
    #[cfg(feature = "test-support")]
    pub fn parked_count(&self, workspace: &str, kind: &str) -> u64 {
        self.parking
            .parked
            .with_label_values(&[workspace, kind])
            .get()
    }
}
