//! The intake stage, between reading a record and its lane: decode → validate →
//! encode for the destination → an [`Envelope`] for its workspace's lane; or, for an
//! event that can never be delivered, a dead letter with its reason.
//!
//! Both readers go through it — the source consumer for fresh records and the parking
//! reader for parked ones — so an event is judged the same way whichever way it came.
//! What a reader counts (the source's buffered events, a parked lane's share) stays
//! with the reader.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::deliver::Failure;
use crate::dlq::DeadLetter;
use crate::event::{Decoder, InvalidEvent};
use crate::lane::{Envelope, Services};
use crate::record::{Origin, Raw};

/// One record as read, before it is judged.
#[derive(Debug)]
pub(crate) struct Received {
    /// Where it was read.
    pub origin: Origin,
    /// Its key, payload and the headers sluice keeps.
    pub raw: Raw,
    /// Its `workspace` header.
    pub workspace: WorkspaceHeader,
    /// Read back from the parking topic (not a fresh record).
    pub from_park: bool,
}

/// A record's `workspace` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkspaceHeader {
    /// None: the payload's own field or the default workspace decides.
    Absent,
    /// This workspace.
    Named(String),
    /// There, but not UTF-8: never guessed (the default workspace would be another
    /// tenant's lane), dead-lettered.
    Unreadable,
}

impl WorkspaceHeader {
    fn name(&self) -> Option<&str> {
        match self {
            WorkspaceHeader::Named(w) => Some(w),
            _ => None,
        }
    }
}

/// What becomes of a record.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Deliverable: on to its workspace's lane.
    Lane(ForLane),
    /// Never deliverable: a dead letter.
    Refused(Refused),
}

/// A record for a lane: the workspace whose lane it goes to, and the envelope.
#[derive(Debug)]
pub(crate) struct ForLane {
    /// The workspace the event belongs to.
    pub workspace: String,
    /// The event, encoded, with where it came from.
    pub envelope: Envelope,
}

/// A record that can never be delivered, and why.
#[derive(Debug)]
pub(crate) struct Refused {
    /// Where it was read.
    pub origin: Origin,
    /// What was read, kept for the dead letter.
    pub raw: Raw,
    /// The workspace to name in the letter, if it is known to be one.
    pub workspace: Option<String>,
    /// Why.
    pub invalid: InvalidEvent,
    /// Read back from the parking topic (not in the buffer's count).
    pub from_park: bool,
}

impl Refused {
    /// It as the books know it.
    pub(crate) fn entry(&self) -> crate::books::Entry<'_> {
        crate::books::Entry {
            origin: &self.origin,
            bytes: self.raw.held_bytes(),
            counted: !self.from_park,
        }
    }
}

/// Judges records for their lanes; writes the dead letters of those it refuses.
#[derive(Debug)]
pub(crate) struct Intake {
    decoder: Decoder,
    services: Arc<Services>,
    /// Dead letters being written, off the reader's path.
    dead_letter_tasks: TaskTracker,
}

impl Intake {
    /// Judges with `decoder`, encodes for `services`'s destination, writes dead letters
    /// to its dead-letter topic on `dead_letter_tasks`.
    pub(crate) fn new(
        decoder: Decoder,
        services: Arc<Services>,
        dead_letter_tasks: TaskTracker,
    ) -> Self {
        Intake {
            decoder,
            services,
            dead_letter_tasks,
        }
    }

    /// Decodes, validates and encodes `record`: an envelope for its lane, or why not.
    pub(crate) fn judge(&self, record: Received) -> Admission {
        let Received {
            origin,
            raw,
            workspace,
            from_park,
        } = record;
        let decoded = match (&workspace, &raw.payload) {
            (WorkspaceHeader::Unreadable, _) => Err(InvalidEvent::UnknownWorkspace(
                "(the workspace header is not UTF-8)".into(),
            )),
            (_, None) => Err(InvalidEvent::Malformed("empty message".into())),
            (header, Some(payload)) => self
                .decoder
                .decode_record(payload, header.name(), Some(&raw.first_written))
                .and_then(|event| Ok((self.services.destination.encode(&event)?, event))),
        };
        match decoded {
            Ok((encoded, event)) => Admission::Lane(ForLane {
                envelope: Envelope {
                    origin,
                    raw,
                    user: event.person.into_string(),
                    event_time: event.timestamp,
                    encoded,
                    arrived: tokio::time::Instant::now(),
                    from_park,
                },
                workspace: event.workspace,
            }),
            Err(invalid) => Admission::Refused(Refused {
                // A header naming no configured workspace is input, not a workspace: it
                // becomes no metric label (the letter keeps the record's headers).
                workspace: match invalid {
                    InvalidEvent::UnknownWorkspace(_) => None,
                    _ => workspace
                        .name()
                        .filter(|w| self.decoder.knows(w))
                        .map(str::to_string),
                },
                origin,
                raw,
                invalid,
                from_park,
            }),
        }
    }

    /// Counts `refused` and writes its dead letter without blocking the caller, which
    /// must keep reading meanwhile. Once the letter is acknowledged the event is done;
    /// past the drain deadline it is left uncommitted, to be read again.
    pub(crate) fn dead_letter(&self, refused: Refused) {
        self.services
            .metrics
            .invalid(&refused.origin, refused.invalid.reason(), &refused.invalid);
        let failure =
            Failure::without_request(refused.invalid.reason(), refused.invalid.to_string());
        let services = self.services.clone();
        self.dead_letter_tasks.spawn(async move {
            let letter = DeadLetter {
                origin: &refused.origin,
                raw: &refused.raw,
                workspace: refused.workspace.as_deref(),
                failure: &failure,
            };
            tokio::select! {
                _ = services.dead_letters.send(letter) => services.books.done([refused.entry()]),
                _ = services.hard_stop.cancelled() => {}
            }
        });
    }
}
