//! A parked workspace's reader, started when its turn at reading comes (see
//! [`super::turns`]) and told which partitions to read.

use super::reader::{self, ReaderCommand, ReaderSetup};
use super::turns::Asking;
use super::LaneParking;

/// A workspace's side of the turns.
impl LaneParking {
    /// Tells its reader; without one, asks for a turn: the reader it then gets reads
    /// every partition off the direct path (the table has them all).
    /// A stale reader is told nothing: the next one reads all that is off the direct
    /// path.
    pub(super) fn reader_send(&mut self, ctrl: ReaderCommand) {
        match &self.reader {
            Some(_) if self.reader_stale => {}
            Some(reader) => reader.send(ctrl),
            None => self.ask_for_reader(),
        }
    }

    pub(super) fn ask_for_reader(&mut self) {
        if self.asking.is_none() {
            self.asking = Some(self.setup.turns.ask());
        }
    }

    /// Without a reader: asks for one while parked, and starts it once its turn comes;
    /// leaves the queue when nothing is parked any more.
    pub(super) fn take_turn(&mut self) {
        if self.reader.is_some() {
            return;
        }
        let off_direct = self.table.off_direct(&self.workspace);
        if off_direct.is_empty() {
            self.asking = None;
            return;
        }
        self.ask_for_reader();
        let granted = self.asking.as_mut().and_then(Asking::granted);
        let metrics = &self.services.metrics;
        metrics.set_readers_waiting(self.setup.turns.waiting());
        let Some(turn) = granted else {
            return;
        };
        self.asking = None;
        self.readers_had += 1;
        let topic = self.setup.parker.topic();
        self.synthetic = reader::synthetic_topic(topic, &self.workspace, self.readers_had).into();
        let setup = ReaderSetup {
            workspace: self.workspace.clone(),
            synthetic: self.synthetic.clone(),
            group: format!("{}.park.{}", self.setup.kafka.group_id, self.workspace),
            topic: topic.to_string(),
            prefetch_kbytes: reader::prefetch_kbytes(
                self.setup.kafka.max_buffered_bytes,
                self.setup.turns.active(),
            ),
            lane: self.lane.clone(),
            in_lane: self.services.in_lane[&self.workspace].clone(),
            share: self.setup.share,
            byte_share: self.setup.byte_share,
            services: self.services.clone(),
            intake: self.setup.intake.clone(),
        };
        match reader::start(&self.setup.kafka, setup, turn) {
            Ok(reader) => {
                for (tp, start) in off_direct {
                    reader.send(ReaderCommand::Assign(tp, start));
                }
                self.reader = Some(reader);
            }
            // Its turn goes back; asked again at the next look.
            Err(e) => {
                tracing::error!(workspace = %self.workspace, "cannot start the parked-events reader: {e}")
            }
        }
    }

    /// Stops its reader (a last commit) and gives its turn back; what that reader
    /// handed over and the lane has not yet taken in is let go of when it comes
    /// ([`LaneParking::read_back`]): no reader has its name any more.
    pub(super) async fn retire_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.stop().await;
        }
        self.readers_had += 1;
        let topic = self.setup.parker.topic();
        self.synthetic = reader::synthetic_topic(topic, &self.workspace, self.readers_had).into();
    }
}
