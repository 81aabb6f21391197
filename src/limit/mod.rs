//! Rate limits: every HTTP attempt, retries included, first takes a token from its
//! workspace's bucket, then a slot under the global in-flight cap.
//!
//! - [`local`]: the token bucket (governor's GCRA) per workspace, on tokio's clock so
//!   tests can pause time.
//! - [`adaptive`]: what a 429 does — pause the workspace until `Retry-After` and lower its
//!   effective rate multiplicatively; successes raise it back additively.

pub mod adaptive;
pub mod local;

pub use local::{Limiter, Permit};
