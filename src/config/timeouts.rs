//! The `[timeouts]` section, in seconds: the waits of RFC 5321 4.5.3.2
//! for a client, and the bounds on delivery.

use super::raw::{RawStress, RawTimeouts};
use super::{ConfigError, Errors};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub command: Duration,
    pub data_block: Duration,
    pub data_total: Duration,
    /// How long a pipe delivery may run before it is killed.
    pub pipe: Duration,
    /// How long a delivery waits for an mbox's locks.
    pub mbox_lock: Duration,
    /// How long the delivery of one message may take in all while its
    /// client waits, well within the 10 minutes a client waits for the
    /// reply to its final dot.
    pub delivery: Duration,
    /// What `command` and `data_block` shrink to while the server is under
    /// pressure (every worker busy, connections waiting): `[stress]
    /// command_timeout`, as Postfix's stress mode has it.
    pub stress_command: Duration,
}

pub(super) fn validate(t: RawTimeouts, s: RawStress, e: &Errors) -> Result<Timeouts, ConfigError> {
    e.range("stress.command_timeout", s.command_timeout, 1, 86400, "")?;
    e.range("timeouts.command", t.command, 1, 86400, "")?;
    e.range("timeouts.data_block", t.data_block, 1, 86400, "")?;
    e.range("timeouts.data_total", t.data_total, 1, 86400, "")?;
    e.range("timeouts.pipe", t.pipe, 1, 86400, "")?;
    e.range("timeouts.mbox_lock", t.mbox_lock, 1, 3600, "")?;
    e.range(
        "timeouts.delivery",
        t.delivery,
        1,
        540,
        " (a client waits 600 s for the reply to its final dot, RFC 5321 4.5.3.2.6)",
    )?;
    Ok(Timeouts {
        command: Duration::from_secs(t.command),
        data_block: Duration::from_secs(t.data_block),
        data_total: Duration::from_secs(t.data_total),
        pipe: Duration::from_secs(t.pipe),
        mbox_lock: Duration::from_secs(t.mbox_lock),
        delivery: Duration::from_secs(t.delivery),
        stress_command: Duration::from_secs(s.command_timeout),
    })
}
