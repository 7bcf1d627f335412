//! How a failure is classed, once, where it happens: temporary, temporary
//! because storage is full, or permanent. The class alone decides what the
//! client is told and what a delivery report says, so both mappings are
//! here, next to each other.

use super::reply::{self, Reply};
use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Temporary,
    /// Temporary, because the disk or a quota is full (452 4.3.1).
    DiskFull,
    Permanent,
}

impl Failure {
    /// The reply to the client whose message this failure ends: 451 or
    /// 452 so that it retries, 554 when retrying cannot help. Only a
    /// permanent failure says why: a temporary one is the administrator's
    /// business, and its details go to the log.
    pub fn reply(self, reason: &str) -> Reply {
        match self {
            Failure::DiskFull => reply::insufficient_storage(),
            Failure::Temporary => reply::local_error(),
            Failure::Permanent => {
                reply::delivery_failed(format!("Error: delivery failed: {reason}"))
            }
        }
    }

    /// The RFC 3463 status a delivery report gives it.
    pub fn status(self) -> &'static str {
        match self {
            Failure::DiskFull => "4.3.1",
            Failure::Temporary => "4.3.0",
            Failure::Permanent => "5.3.0",
        }
    }

    pub fn is_permanent(self) -> bool {
        self == Failure::Permanent
    }
}

/// A failure and why, for the log and for a permanent failure's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    pub kind: Failure,
    pub reason: String,
}

impl DeliveryError {
    pub fn new(kind: Failure, reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            kind,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The failure that answers for several: storage full if any is, else
/// temporary if any is, else permanent; with the reason of the first
/// failure of that class. `None` for none.
pub fn summary<'a>(all: impl IntoIterator<Item = &'a DeliveryError>) -> Option<DeliveryError> {
    let all: Vec<&DeliveryError> = all.into_iter().collect();
    let kind = [Failure::DiskFull, Failure::Temporary, Failure::Permanent]
        .into_iter()
        .find(|k| all.iter().any(|e| e.kind == *k))?;
    let first = all.iter().find(|e| e.kind == kind)?;
    Some(DeliveryError::new(kind, first.reason.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_has_its_reply_and_status() {
        let cases = [
            (Failure::Temporary, 451, "4.3.0", "4.3.0"),
            (Failure::DiskFull, 452, "4.3.1", "4.3.1"),
            (Failure::Permanent, 554, "5.3.0", "5.3.0"),
        ];
        for (kind, code, enhanced, status) in cases {
            let r = kind.reply("the reason");
            assert_eq!(r.code(), code);
            assert_eq!(r.enhanced().unwrap().to_string(), enhanced);
            assert_eq!(kind.status(), status);
            assert_eq!(r.to_string().contains("the reason"), kind.is_permanent());
        }
    }

    #[test]
    fn the_summary_is_the_most_hopeful_class() {
        let e = |kind, why: &str| DeliveryError::new(kind, why);
        let all = [
            e(Failure::Permanent, "p"),
            e(Failure::Temporary, "t1"),
            e(Failure::Temporary, "t2"),
        ];
        assert_eq!(summary(&all), Some(e(Failure::Temporary, "t1")));
        let full = [e(Failure::Permanent, "p"), e(Failure::DiskFull, "d")];
        assert_eq!(summary(&full), Some(e(Failure::DiskFull, "d")));
        assert_eq!(summary(&all[..1]), Some(e(Failure::Permanent, "p")));
        assert_eq!(summary(&[]), None);
    }
}
