//! `queue_dir` and the `[queue]` section: where queued mail waits, and
//! how long and how often it is retried (RFC 5321 4.5.4.1).

use super::raw::RawQueue;
use super::{ConfigError, Errors};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    pub dir: PathBuf,
    /// The wait before the first retry; it doubles after each.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// How long a recipient is retried before it fails.
    pub max_lifetime: Duration,
    /// When the sender is told of a delay; zero: never.
    pub delay_warning: Duration,
}

pub(super) fn validate(
    dir: PathBuf,
    q: RawQueue,
    e: &Errors,
) -> Result<QueueSettings, ConfigError> {
    if dir.as_os_str().is_empty() {
        return Err(e.at("queue_dir", "empty path"));
    }
    e.range("queue.retry_first", q.retry_first, 1, 86400, "")?;
    e.range(
        "queue.retry_max",
        q.retry_max,
        q.retry_first,
        7 * 86400,
        " (at least queue.retry_first)",
    )?;
    e.range(
        "queue.max_queue_lifetime",
        q.max_queue_lifetime,
        1,
        100 * 86400,
        "",
    )?;
    if q.delay_warning >= q.max_queue_lifetime {
        return Err(e.at(
            "queue.delay_warning",
            format!(
                "{} is not shorter than queue.max_queue_lifetime ({}); 0 turns the warning off",
                q.delay_warning, q.max_queue_lifetime
            ),
        ));
    }
    Ok(QueueSettings {
        dir,
        retry_first: Duration::from_secs(q.retry_first),
        retry_max: Duration::from_secs(q.retry_max),
        max_lifetime: Duration::from_secs(q.max_queue_lifetime),
        delay_warning: Duration::from_secs(q.delay_warning),
    })
}
