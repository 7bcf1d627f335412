//! The system's clock and this process's queue id sequence: what the pure
//! protocol core is handed as its [`Clock`], and what the rest of the
//! crate reads the time from.

use crate::smtp::trace::{self, Clock, UnixTime};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The real clock. Ids are unique within the process: the sequence
/// number differs for ids made in the same microsecond (up to 65536).
pub struct System;

/// The one instance sessions and notices share, so that its ids never
/// repeat.
pub static SYSTEM: System = System;

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl Clock for System {
    fn now(&self) -> UnixTime {
        unix_time(SystemTime::now())
    }

    fn queue_id(&self) -> String {
        trace::queue_id(self.now(), SEQUENCE.fetch_add(1, Ordering::Relaxed))
    }
}

/// 64 bits that differ from call to call and process to process (std's
/// hasher keys are random), without a dependency for it: for names and
/// boundaries that must not be guessed.
pub fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// A `SystemTime` as the core counts time.
pub fn unix_time(t: SystemTime) -> UnixTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UnixTime {
            secs: d.as_secs() as i64,
            micros: d.subsec_micros(),
        },
        Err(e) => {
            let before = e.duration();
            // Whole seconds before the epoch, rounded down.
            let micros = before.subsec_micros();
            UnixTime {
                secs: -(before.as_secs() as i64) - i64::from(micros > 0),
                micros: if micros > 0 { 1_000_000 - micros } else { 0 },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_before_and_after_the_epoch() {
        let at = |t: SystemTime| unix_time(t);
        assert_eq!(
            at(UNIX_EPOCH + Duration::from_micros(1_500_000)),
            UnixTime {
                secs: 1,
                micros: 500_000
            }
        );
        assert_eq!(
            at(UNIX_EPOCH - Duration::from_micros(1_500_000)),
            UnixTime {
                secs: -2,
                micros: 500_000
            }
        );
        assert_eq!(
            at(UNIX_EPOCH - Duration::from_secs(3)),
            UnixTime::from_secs(-3)
        );
    }

    #[test]
    fn ids_from_the_system_clock_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| SYSTEM.queue_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
