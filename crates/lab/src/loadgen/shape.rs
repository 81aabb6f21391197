//! What the generated events look like: Segment-spec identify and track JSON for a set of
//! workspaces and users, each valid event carrying its user's next `seq` (from 1) in
//! `traits`/`properties`, so loss and per-user order can be checked downstream — plus a
//! chosen fraction of deliberately invalid events for dead-letter drills.
//!
//! Everything comes from one seeded ChaCha8 generator: the same seed and shape give the
//! same keys and bytes on any machine and any version of the `rand` crates.

use std::collections::HashMap;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use serde_json::{json, Map, Value};

/// The shape options of `sluice loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShapeArgs {
    /// Workspaces and their share of events, `ID[:WEIGHT],…` (default: the workspaces of
    /// `--config`, evenly, else `local`). Each event names its workspace in a
    /// `workspace` field and header.
    #[arg(long, value_delimiter = ',')]
    pub workspaces: Vec<WorkspaceWeight>,
    /// Distinct users per workspace (`u0`, `u1`, …); events are keyed by user.
    #[arg(long, default_value_t = 1000)]
    pub users: u64,
    /// User popularity: 0 for uniform, else Zipf with this exponent (1.0: the top user
    /// gets ~1/ln(users) of the events).
    #[arg(long, default_value_t = 0.0)]
    pub zipf: f64,
    /// Share of identify events (the rest are tracks), 0..1.
    #[arg(long, default_value_t = 0.2)]
    pub identify_share: f64,
    /// Track event names, picked uniformly.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Order Placed,Page Viewed,Product Added,Signed In,Checkout Started"
    )]
    pub event_names: Vec<String>,
    /// Extra properties (traits for identify) per event, besides `seq`.
    #[arg(long, default_value_t = 4)]
    pub properties: usize,
    /// Length of each extra property's string value, in bytes.
    #[arg(long, default_value_t = 16)]
    pub property_bytes: usize,
    /// Share of deliberately invalid events, 0..1 (they carry no `seq`).
    #[arg(long, default_value_t = 0.0)]
    pub invalid: f64,
    /// Which invalid events to make, picked evenly.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "malformed,missing-user,unknown-type,oversized"
    )]
    pub invalid_kinds: Vec<InvalidKind>,
    /// Size of an `oversized` event's payload, in bytes (above the worker's
    /// `batch.max_event_bytes`, 32 000 by default).
    #[arg(long, default_value_t = 40_000)]
    pub oversized_bytes: usize,
}

/// A workspace id and its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceWeight {
    /// The id events name.
    pub id: String,
    /// Relative share of events.
    pub weight: f64,
}

impl FromStr for WorkspaceWeight {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, weight) = match s.split_once(':') {
            Some((id, w)) => (
                id,
                w.parse::<f64>()
                    .ok()
                    .filter(|w| w.is_finite() && *w > 0.0)
                    .ok_or_else(|| format!("workspace {s:?}: the weight must be above 0"))?,
            ),
            None => (s, 1.0),
        };
        if id.is_empty() {
            return Err(format!("workspace {s:?}: empty id"));
        }
        Ok(WorkspaceWeight {
            id: id.to_string(),
            weight,
        })
    }
}

/// A deliberately invalid event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum InvalidKind {
    /// Truncated JSON (dead letter `malformed_json`).
    Malformed,
    /// A track with neither userId nor anonymousId (`missing_user_id`).
    MissingUser,
    /// `type: "page"` (`unknown_type`).
    UnknownType,
    /// A payload over the size limit (`too_large`).
    Oversized,
}

impl InvalidKind {
    /// The name used in summaries (and on the command line).
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidKind::Malformed => "malformed",
            InvalidKind::MissingUser => "missing-user",
            InvalidKind::UnknownType => "unknown-type",
            InvalidKind::Oversized => "oversized",
        }
    }
}

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Index of its workspace in the shape.
    pub workspace: usize,
    /// The Kafka key: its user.
    pub key: String,
    /// The payload.
    pub value: Vec<u8>,
    /// `Some` for a deliberately invalid event.
    pub invalid: Option<InvalidKind>,
}

/// Why a shape cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    /// A share outside 0..1.
    #[error("--{0} must be between 0 and 1")]
    Share(&'static str),
    /// No users.
    #[error("--users must be at least 1")]
    NoUsers,
    /// A bad Zipf exponent.
    #[error("--zipf must be 0 (uniform) or above")]
    Zipf,
    /// Invalid events asked for with no kind to make.
    #[error("--invalid-kinds is empty")]
    NoKinds,
    /// Tracks asked for with no names.
    #[error("--event-names is empty")]
    NoNames,
}

/// The shape, checked, with workspaces resolved.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Workspaces and weights.
    pub workspaces: Vec<WorkspaceWeight>,
    /// The rest of the options.
    pub args: ShapeArgs,
}

impl Shape {
    /// Checks `args`; `default_workspaces` applies when none are given.
    pub fn new(args: ShapeArgs, default_workspaces: Vec<String>) -> Result<Shape, ShapeError> {
        for (name, v) in [
            ("identify-share", args.identify_share),
            ("invalid", args.invalid),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ShapeError::Share(name));
            }
        }
        if args.users == 0 {
            return Err(ShapeError::NoUsers);
        }
        if !(args.zipf.is_finite() && args.zipf >= 0.0) {
            return Err(ShapeError::Zipf);
        }
        if args.invalid > 0.0 && args.invalid_kinds.is_empty() {
            return Err(ShapeError::NoKinds);
        }
        if args.identify_share < 1.0 && args.event_names.is_empty() {
            return Err(ShapeError::NoNames);
        }
        let workspaces = if args.workspaces.is_empty() {
            let ids = if default_workspaces.is_empty() {
                vec!["local".to_string()]
            } else {
                default_workspaces
            };
            ids.into_iter()
                .map(|id| WorkspaceWeight { id, weight: 1.0 })
                .collect()
        } else {
            args.workspaces.clone()
        };
        Ok(Shape { workspaces, args })
    }
}

/// Makes the events of one run, in order.
#[derive(Debug)]
pub struct Generator {
    shape: Shape,
    rng: ChaCha8Rng,
    zipf: Option<Zipf<f64>>,
    /// Cumulative workspace weights, normalised to 1.
    cumulative: Vec<f64>,
    /// Last `seq` given to each (workspace, user).
    seqs: HashMap<(usize, u64), u64>,
    /// Prefix of every messageId: the seed, so two runs with different seeds never
    /// share ids (Customer.io drops repeated ids).
    id_prefix: String,
    index: u64,
}

impl Generator {
    /// A generator for `shape` from `seed`.
    pub fn new(shape: Shape, seed: u64) -> Generator {
        let zipf = (shape.args.zipf > 0.0).then(|| {
            Zipf::new(shape.args.users as f64, shape.args.zipf).expect("checked in Shape::new")
        });
        let total: f64 = shape.workspaces.iter().map(|w| w.weight).sum();
        let mut acc = 0.0;
        let cumulative = shape
            .workspaces
            .iter()
            .map(|w| {
                acc += w.weight / total;
                acc
            })
            .collect();
        Generator {
            shape,
            rng: ChaCha8Rng::seed_from_u64(seed),
            zipf,
            cumulative,
            seqs: HashMap::new(),
            id_prefix: format!("lg-{seed:016x}"),
            index: 0,
        }
    }

    /// Workspace ids, by index.
    pub fn workspaces(&self) -> impl Iterator<Item = &str> {
        self.shape.workspaces.iter().map(|w| w.id.as_str())
    }

    /// The next event.
    pub fn next_event(&mut self) -> Generated {
        let index = self.index;
        self.index += 1;
        let u: f64 = self.rng.random();
        let workspace = self
            .cumulative
            .partition_point(|c| *c <= u)
            .min(self.cumulative.len() - 1);
        let user = match &self.zipf {
            Some(z) => z.sample(&mut self.rng) as u64 - 1,
            None => self.rng.random_range(0..self.shape.args.users),
        };
        let key = format!("u{user}");
        let invalid = (self.shape.args.invalid > 0.0
            && self.rng.random_bool(self.shape.args.invalid))
        .then(|| {
            let kinds = &self.shape.args.invalid_kinds;
            kinds[self.rng.random_range(0..kinds.len())]
        });
        let ws_id = self.shape.workspaces[workspace].id.clone();
        let message_id = format!("{}-{index}", self.id_prefix);
        let value = match invalid {
            Some(kind) => self.invalid_event(kind, &ws_id, &key, &message_id),
            None => {
                let seq = self.seqs.entry((workspace, user)).or_insert(0);
                *seq += 1;
                let seq = *seq;
                self.valid_event(&ws_id, &key, seq, &message_id)
            }
        };
        Generated {
            workspace,
            key,
            value,
            invalid,
        }
    }

    fn fields(&mut self, seq: u64) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("seq".into(), seq.into());
        for p in 0..self.shape.args.properties {
            fields.insert(
                format!("p{p}"),
                self.text(self.shape.args.property_bytes).into(),
            );
        }
        fields
    }

    fn text(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    fn valid_event(&mut self, workspace: &str, user: &str, seq: u64, message_id: &str) -> Vec<u8> {
        let identify = self.rng.random_bool(self.shape.args.identify_share);
        let mut fields = self.fields(seq);
        let event = if identify {
            fields.insert("email".into(), format!("{user}@example.com").into());
            json!({"type": "identify", "messageId": message_id, "userId": user,
                   "traits": fields, "workspace": workspace})
        } else {
            let names = &self.shape.args.event_names;
            let name = names[self.rng.random_range(0..names.len())].clone();
            json!({"type": "track", "messageId": message_id, "userId": user,
                   "event": name, "properties": fields, "workspace": workspace})
        };
        serde_json::to_vec(&event).expect("a JSON value serialises")
    }

    fn invalid_event(
        &mut self,
        kind: InvalidKind,
        workspace: &str,
        user: &str,
        message_id: &str,
    ) -> Vec<u8> {
        let event = match kind {
            InvalidKind::Malformed => {
                return format!(
                    "{{\"type\":\"track\",\"messageId\":\"{message_id}\",\"userId\":\"{user}\",\"event\":"
                )
                .into_bytes()
            }
            InvalidKind::MissingUser => json!({"type": "track", "messageId": message_id,
                "event": "Order Placed", "properties": {}, "workspace": workspace}),
            InvalidKind::UnknownType => json!({"type": "page", "messageId": message_id,
                "userId": user, "name": "Home", "workspace": workspace}),
            InvalidKind::Oversized => {
                let blob = self.text(self.shape.args.oversized_bytes);
                json!({"type": "track", "messageId": message_id, "userId": user,
                       "event": "Order Placed", "properties": {"blob": blob},
                       "workspace": workspace})
            }
        };
        serde_json::to_vec(&event).expect("a JSON value serialises")
    }
}

#[cfg(test)]
mod tests;
