//! The one clock a node reads protocol time from.
//!
//! Every rule in `btd_protocol` takes `now` as an argument; the daemon reads it from the [`Clock`]
//! handed to the node in [`crate::node::NodeConfig`] (and to the worker loop through its
//! [`crate::node::NodeHandle`]), never from a process-global. Production nodes get the system
//! clock; tests and netsim hand in a clock they move (`testkit::OffsetClock`), per node, so one
//! test's expiry cannot leak into another's.

use std::fmt;
use std::sync::Arc;

use btd_protocol::Timestamp;

/// Where time comes from.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTime;

impl TimeSource for SystemTime {
    fn now(&self) -> Timestamp {
        system_now()
    }
}

/// Milliseconds since the Unix epoch from the system clock (0 before 1970).
pub(crate) fn system_now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

/// A node's clock: cheap to clone, shared by the node task, its handle and the worker loop.
#[derive(Debug, Clone)]
pub struct Clock(Arc<dyn TimeSource>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime))
    }

    /// A clock reading `source`.
    pub fn new(source: impl TimeSource + 'static) -> Clock {
        Clock(Arc::new(source))
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.0.now()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}
