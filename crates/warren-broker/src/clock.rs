//! Wall-clock time in milliseconds since the Unix epoch: message deadlines, queue expiry and
//! delayed messages are kept in it because the delayed ones must survive a restart.
//!
//! The broker has no timer of its own: the server calls [`crate::Broker::tick`] with the time,
//! which lets tests pass a time of their choosing.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
