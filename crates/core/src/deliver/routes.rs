//! Several destinations in one worker: each workspace's events go to the destination it
//! names (`destination = "NAME"`), or to `[destination]`. Every destination keeps its
//! own client — connection pool, credentials, retry classes — and the lanes see one
//! [`Destination`] as before.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Destination, Encoded, ItemOutcome};
use crate::event::{Event, InvalidEvent};

/// The destination of each workspace.
pub struct Routes {
    by_workspace: HashMap<String, Arc<dyn Destination>>,
    /// `[destination]`'s client: a workspace no route names (it refuses what it does
    /// not know, as one destination alone does).
    default: Arc<dyn Destination>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut routed: Vec<&str> = self.by_workspace.keys().map(String::as_str).collect();
        routed.sort_unstable();
        f.debug_struct("Routes")
            .field("routed", &routed)
            .finish_non_exhaustive()
    }
}

impl Routes {
    /// Routes to `default`, and to each workspace's own where `by_workspace` has one.
    pub fn new(
        default: Arc<dyn Destination>,
        by_workspace: HashMap<String, Arc<dyn Destination>>,
    ) -> Self {
        Routes {
            by_workspace,
            default,
        }
    }

    fn of(&self, workspace: &str) -> &dyn Destination {
        self.by_workspace
            .get(workspace)
            .unwrap_or(&self.default)
            .as_ref()
    }
}

impl Destination for Routes {
    fn encode(&self, event: &Event) -> Result<Encoded, InvalidEvent> {
        self.of(&event.workspace).encode(event)
    }

    fn deliver<'a>(
        &'a self,
        workspace: &'a str,
        items: &'a [Encoded],
    ) -> BoxFuture<'a, Vec<ItemOutcome>> {
        self.of(workspace).deliver(workspace, items)
    }
}
