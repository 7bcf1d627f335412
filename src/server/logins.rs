//! Failed AUTH attempts by client address: after `auth.max_failures`
//! within `auth.failure_window`, the address is refused at connect
//! (`421 4.7.0`) until enough of them have aged out of the window. As
//! Postfix's anvil and fail2ban do it, without a daemon of its own.
//! Bounded: at most [`MAX_ADDRESSES`] addresses and `max_failures` times
//! each are remembered; the time is given, so that tests need no clock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses remembered at once; past it the one whose last failure is
/// oldest is forgotten.
pub const MAX_ADDRESSES: usize = 4096;

#[derive(Default)]
struct Failures {
    /// The last `max` failures, oldest first.
    times: VecDeque<Instant>,
    /// Its refusal was logged during this spell.
    told: bool,
}

/// What a connection from an address is to be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Welcome,
    /// Refused; `first` for the first refusal of this spell (to log).
    Refused {
        first: bool,
    },
}

#[derive(Default)]
pub struct FailedLogins {
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

impl FailedLogins {
    /// One failed attempt from `ip` at `now`.
    pub fn record(&self, ip: IpAddr, now: Instant, max: u32, window: Duration) {
        let mut map = self.lock();
        if !map.contains_key(&ip) && map.len() >= MAX_ADDRESSES {
            map.retain(|_, f| {
                f.times
                    .back()
                    .is_some_and(|&t| now.duration_since(t) < window)
            });
            if map.len() >= MAX_ADDRESSES {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, f)| f.times.back().copied())
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    map.remove(&oldest);
                }
            }
        }
        let f = map.entry(ip).or_default();
        f.times.push_back(now);
        while f.times.len() > max as usize {
            f.times.pop_front();
        }
    }

    /// Whether `ip` may connect at `now`: refused while `max` failures
    /// lie within `window`.
    pub fn verdict(&self, ip: IpAddr, now: Instant, max: u32, window: Duration) -> Verdict {
        let mut map = self.lock();
        let Some(f) = map.get_mut(&ip) else {
            return Verdict::Welcome;
        };
        while f
            .times
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            f.times.pop_front();
        }
        if f.times.len() >= max as usize {
            let first = !f.told;
            f.told = true;
            return Verdict::Refused { first };
        }
        if f.times.is_empty() {
            map.remove(&ip);
        } else {
            f.told = false;
        }
        Verdict::Welcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.by_address.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(600);

    #[test]
    fn max_failures_within_the_window_refuse_until_they_age_out() {
        let logins = FailedLogins::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for s in 0..4 {
            logins.record(ip, at(s * 10), 5, WINDOW);
            assert_eq!(logins.verdict(ip, at(s * 10), 5, WINDOW), Verdict::Welcome);
        }
        logins.record(ip, at(100), 5, WINDOW);
        assert_eq!(
            logins.verdict(ip, at(100), 5, WINDOW),
            Verdict::Refused { first: true }
        );
        assert_eq!(
            logins.verdict(ip, at(200), 5, WINDOW),
            Verdict::Refused { first: false }
        );
        assert_eq!(logins.verdict(other, at(200), 5, WINDOW), Verdict::Welcome);
        // The first failure (at 0) ages out at 600: four remain.
        assert_eq!(logins.verdict(ip, at(600), 5, WINDOW), Verdict::Welcome);
        // One more brings it back, and it is told (logged) again.
        logins.record(ip, at(601), 5, WINDOW);
        assert_eq!(
            logins.verdict(ip, at(601), 5, WINDOW),
            Verdict::Refused { first: true }
        );
        // All aged out: forgotten.
        assert_eq!(logins.verdict(ip, at(2000), 5, WINDOW), Verdict::Welcome);
        assert_eq!(logins.len(), 0);
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_refuse() {
        let logins = FailedLogins::default();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..20 {
            let now = t0 + Duration::from_secs(i * 200);
            logins.record(ip, now, 5, WINDOW);
            assert_eq!(logins.verdict(ip, now, 5, WINDOW), Verdict::Welcome, "{i}");
        }
    }

    #[test]
    fn the_addresses_remembered_are_bounded() {
        let logins = FailedLogins::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            logins.record(ip, t0 + Duration::from_millis(u64::from(i)), 5, WINDOW);
        }
        assert_eq!(logins.len(), MAX_ADDRESSES);
        // The newest are kept.
        let newest = IpAddr::from(std::net::Ipv4Addr::from(
            0x0a00_0000 + MAX_ADDRESSES as u32 + 9,
        ));
        logins.record(newest, t0 + Duration::from_secs(1), 2, WINDOW);
        assert_eq!(
            logins.verdict(newest, t0 + Duration::from_secs(1), 2, WINDOW),
            Verdict::Refused { first: true }
        );
    }
}
