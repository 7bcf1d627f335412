//! systemd's service notifications (sd_notify(3)), without libsystemd: a
//! datagram of `KEY=VALUE` lines to the socket `NOTIFY_SOCKET` names (a
//! path, or `@name` in the abstract namespace). `READY=1` once every
//! listener is bound and the pool runs; `RELOADING=1` with
//! `MONOTONIC_USEC` and then `READY=1` around a reload; `STOPPING=1` when
//! the shutdown starts; `STATUS=` with a summary; `WATCHDOG=1` from the
//! acceptor while `WATCHDOG_USEC` asks for it. Without `NOTIFY_SOCKET`
//! nothing is sent. Children never see the variables: pipes and the
//! delivery helper run with a cleared environment.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

pub struct Notify {
    to: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notify {
    /// From the environment systemd gives the service.
    pub fn from_env() -> Notify {
        let var = |name: &str| std::env::var_os(name);
        let to = var("NOTIFY_SOCKET").and_then(|s| {
            let bytes = s.as_bytes();
            let addr = match bytes.first() {
                Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
                Some(b'/') => SocketAddr::from_pathname(Path::new(&s)),
                _ => {
                    log::warn!("NOTIFY_SOCKET={s:?} is neither a path nor @name; not notifying");
                    return None;
                }
            };
            let sock = addr.and_then(|a| UnixDatagram::unbound().map(|u| (u, a)));
            match sock {
                Ok(pair) => Some(pair),
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET={s:?}: {e}; not notifying");
                    None
                }
            }
        });
        // As sd_watchdog_enabled(3): for us unless WATCHDOG_PID names
        // another process.
        let ours =
            var("WATCHDOG_PID").is_none_or(|p| p.to_str() == Some(&std::process::id().to_string()));
        let watchdog = var("WATCHDOG_USEC")
            .and_then(|u| u.to_str()?.parse::<u64>().ok())
            .filter(|&u| u > 0 && ours && to.is_some())
            .map(Duration::from_micros);
        Notify { to, watchdog }
    }

    /// Sends one notification; a failure is logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.to {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                log::warn!("cannot notify the service manager: {e}");
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.to.is_some()
    }

    /// How often the watchdog wants to hear from us: half its interval.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// `RELOADING=1` with the monotonic clock, as `Type=notify-reload`
    /// expects.
    pub fn reloading(&self) {
        if self.enabled() {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
                .unwrap_or(0);
            self.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
        }
    }
}

/// The one-line summary for `STATUS=`.
pub fn status(connections: usize, queued: usize) -> String {
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    format!(
        "{} open, {} in the queue",
        plural(connections, "connection", "connections"),
        plural(queued, "message", "messages")
    )
}
