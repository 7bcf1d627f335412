//! The milters (mail filters speaking Sendmail's milter protocol) a
//! message passes before it is accepted: the top-level `milters` list for
//! every listener, a listener's own `milters` instead, and `[relay]
//! milters` for the mail this box's own users send (`sendmail`, and
//! clients that logged in with AUTH). An entry is an address
//! (`"inet:127.0.0.1:11332"`, `"unix:/run/opendkim/opendkim.sock"`) or
//! a table that also sets its timeouts and what to do when it is down,
//! as Postfix's `milter_*` parameters do. The `quarantine` key names the
//! mailbox a message a milter quarantines goes to.

use super::raw::RawMilter;
use super::{ConfigError, Errors};
use std::path::PathBuf;
use std::time::Duration;

/// Where a milter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterAddress {
    /// `inet:host:port` (`inet6:` too); a name is resolved at connect.
    Inet {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

impl std::fmt::Display for MilterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MilterAddress::Inet { host, port } if host.contains(':') => {
                write!(f, "inet:[{host}]:{port}")
            }
            MilterAddress::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            MilterAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What a message meets when its milter cannot be asked (down, timed
/// out, or talking nonsense): Postfix's `milter_default_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultAction {
    /// `451 4.7.1`: the client tries again later. Nothing unfiltered
    /// gets in.
    #[default]
    Tempfail,
    /// Go on as if the milter were not configured.
    Accept,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Milter {
    pub address: MilterAddress,
    pub default_action: DefaultAction,
    pub connect_timeout: Duration,
    /// Each command but the end of the message.
    pub command_timeout: Duration,
    /// The body's chunks and the end of the message.
    pub message_timeout: Duration,
}

impl Milter {
    /// For the log: the address as configured.
    pub fn name(&self) -> String {
        self.address.to_string()
    }
}

/// One list: an entry each in `key`.
pub(super) fn list(key: &str, raw: Vec<RawMilter>, e: &Errors) -> Result<Vec<Milter>, ConfigError> {
    if raw.len() > 16 {
        return Err(e.at(key, format!("{} milters; at most 16", raw.len())));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| one(&format!("{key}[{i}]"), m, e))
        .collect()
}

fn one(key: &str, raw: RawMilter, e: &Errors) -> Result<Milter, ConfigError> {
    let (address, action, connect, command, message) = match raw {
        RawMilter::Address(a) => (a, None, None, None, None),
        RawMilter::Table(t) => (
            t.address,
            t.default_action,
            t.connect_timeout,
            t.command_timeout,
            t.message_timeout,
        ),
    };
    let address = parse_address(&address).map_err(|why| e.at(key, why))?;
    let default_action = match action.as_deref() {
        None | Some("tempfail") => DefaultAction::Tempfail,
        Some("accept") => DefaultAction::Accept,
        Some(other) => {
            return Err(e.at(
                &format!("{key}.default_action"),
                format!("{other:?} is neither \"tempfail\" nor \"accept\""),
            ))
        }
    };
    let secs = |name: &str, v: Option<u64>, default: u64| {
        let v = v.unwrap_or(default);
        e.range(&format!("{key}.{name}"), v, 1, 3600, " (seconds)")?;
        Ok(Duration::from_secs(v))
    };
    Ok(Milter {
        address,
        default_action,
        connect_timeout: secs("connect_timeout", connect, 30)?,
        command_timeout: secs("command_timeout", command, 10)?,
        message_timeout: secs("message_timeout", message, 300)?,
    })
}

/// `inet:host:port`, `inet:[v6]:port`, `inet6:...`, `unix:/path`, or
/// `local:/path` (Sendmail's spellings), or a bare `/path`.
pub fn parse_address(s: &str) -> Result<MilterAddress, String> {
    let bad = || {
        format!(
            "{s:?} is not a milter address, like \"inet:127.0.0.1:11332\" or \"unix:/run/opendkim/opendkim.sock\""
        )
    };
    if let Some(path) = s
        .strip_prefix("unix:")
        .or_else(|| s.strip_prefix("local:"))
        .or_else(|| s.starts_with('/').then_some(s))
    {
        if !path.starts_with('/') {
            return Err(format!("{s:?}: a milter's socket path must be absolute"));
        }
        return Ok(MilterAddress::Unix(PathBuf::from(path)));
    }
    let rest = s
        .strip_prefix("inet:")
        .or_else(|| s.strip_prefix("inet6:"))
        .ok_or_else(bad)?;
    // Sendmail writes `inet:port@host`; Postfix `inet:host:port`.
    let (host, port) = match rest.split_once('@') {
        Some((port, host)) => (host, port),
        None => rest.rsplit_once(':').ok_or_else(bad)?,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(bad)?;
    let valid = host.parse::<std::net::IpAddr>().is_ok() || super::is_hostname(host);
    if !valid {
        return Err(bad());
    }
    Ok(MilterAddress::Inet {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_postfix_and_sendmail_spellings() {
        let inet = |h: &str, p| MilterAddress::Inet {
            host: h.into(),
            port: p,
        };
        for (text, want) in [
            ("inet:127.0.0.1:11332", inet("127.0.0.1", 11332)),
            ("inet:localhost:8891", inet("localhost", 8891)),
            ("inet:[::1]:8891", inet("::1", 8891)),
            ("inet6:[::1]:8891", inet("::1", 8891)),
            ("inet:8891@127.0.0.1", inet("127.0.0.1", 8891)),
            (
                "unix:/run/opendkim/opendkim.sock",
                MilterAddress::Unix("/run/opendkim/opendkim.sock".into()),
            ),
            (
                "local:/run/x.sock",
                MilterAddress::Unix("/run/x.sock".into()),
            ),
            ("/run/x.sock", MilterAddress::Unix("/run/x.sock".into())),
        ] {
            assert_eq!(parse_address(text), Ok(want), "{text}");
        }
        for bad in [
            "127.0.0.1:11332",
            "inet:127.0.0.1",
            "inet:127.0.0.1:0",
            "inet:127.0.0.1:70000",
            "inet:bad host:25",
            "unix:relative.sock",
            "tcp:1.2.3.4:5",
            "",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_address_prints_as_written() {
        for text in [
            "inet:127.0.0.1:11332",
            "inet:[::1]:8891",
            "unix:/run/x.sock",
        ] {
            assert_eq!(parse_address(text).unwrap().to_string(), text);
        }
    }
}
