//! Trace information: queue ids, RFC 5322 dates and the `Received:` field
//! (RFC 5321 4.4). Dates are written in UTC (`+0000`), which RFC 5322 allows
//! and which needs no time zone database on a small box.
//!
//! Nothing here reads a clock: the time and the ids come in from outside
//! through [`Clock`], as rustls takes its time from a `TimeProvider`, so
//! that the server uses the system's clock and a test replays exactly.

use super::peer::Peer;
use core::fmt::Write as _;
use core::net::IpAddr;

/// A moment, as seconds and microseconds since the Unix epoch (negative
/// seconds before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct UnixTime {
    pub secs: i64,
    pub micros: u32,
}

impl UnixTime {
    pub const fn from_secs(secs: i64) -> UnixTime {
        UnixTime { secs, micros: 0 }
    }
}

/// Where the protocol core gets the time and new queue ids.
pub trait Clock: Send + Sync {
    fn now(&self) -> UnixTime;
    /// A queue id never given before by this process (see [`queue_id`]).
    fn queue_id(&self) -> String;
}

/// A queue id: the time in microseconds and a sequence number, so that ids
/// sort by arrival; `seq` must differ between ids made in one microsecond.
pub fn queue_id(now: UnixTime, seq: u32) -> String {
    let secs = now.secs.max(0) as u64;
    format!("{secs:09X}{:05X}{:04X}", now.micros, seq & 0xffff)
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Broken-down UTC time.
struct Civil {
    year: i64,
    month: usize,
    day: u32,
    weekday: usize,
    hour: u64,
    minute: u64,
    second: u64,
}

/// `secs` since the epoch, before it too.
fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400) as u64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        weekday: (days.rem_euclid(7)) as usize,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
    }
}

/// `Sun, 22 Nov 2026 14:40:00 +0000` (RFC 5322 3.3).
pub fn rfc5322_date(at: UnixTime) -> String {
    let c = civil(at.secs);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[c.weekday],
        c.day,
        MONTHS[c.month - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// `Sun Nov 22 14:40:00 2026`, the C `asctime` form the `From ` line of
/// an mbox carries (UTC).
pub fn asctime(at: UnixTime) -> String {
    let c = civil(at.secs);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[c.weekday],
        MONTHS[c.month - 1],
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.year
    )
}

/// The address literal of an IP as RFC 5321 4.1.3 writes it.
pub fn address_literal(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// What a TLS session negotiated, as the `Received:` field and the log
/// report it: `TLSv1.3`, `TLS_AES_256_GCM_SHA384`, `X25519`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub key_exchange: Option<String>,
}

impl core::fmt::Display for TlsInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} with cipher {}", self.version, self.cipher)?;
        if let Some(kx) = &self.key_exchange {
            write!(f, " key-exchange {kx}")?;
        }
        Ok(())
    }
}

/// What a `Received:` field records about one transaction.
pub struct Received<'a> {
    pub helo: &'a str,
    pub peer: &'a Peer,
    pub hostname: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `UTF8SMTP`, ... (RFC 3848, RFC 6531).
    pub protocol: &'a str,
    /// The TLS session the message came over, written in a comment as
    /// Postfix does.
    pub tls: Option<&'a TlsInfo>,
    pub id: &'a str,
    /// Set when the message has exactly one recipient.
    pub recipient: Option<&'a str>,
    pub date: UnixTime,
}

impl Received<'_> {
    /// The field with its LF line end, folded over three lines (four with
    /// TLS). A local program has no address: its uid is said instead, as
    /// Postfix does for mail from its sendmail command.
    pub fn render(&self) -> String {
        // Written into one string: writing to a String cannot fail.
        let mut out = String::with_capacity(256);
        let _ = write!(out, "Received: from {}", self.helo);
        let by = match self.peer {
            Peer::Tcp { addr, name } => {
                let name = name.as_deref().unwrap_or("unknown");
                let _ = write!(out, " ({name} {})", address_literal(addr.ip()));
                None
            }
            Peer::Local { uid, .. } => Some(uid),
        };
        if let Some(t) = self.tls {
            let _ = write!(out, "\n\t(using {t})");
        }
        let _ = write!(out, "\n\tby {} (mailroom", self.hostname);
        if let Some(uid) = by {
            let _ = write!(out, ", from userid {uid}");
        }
        let _ = write!(out, ") with {} id {}", self.protocol, self.id);
        if let Some(r) = self.recipient {
            let _ = write!(out, "\n\tfor <{r}>");
        }
        let _ = write!(out, ";\n\t{}\n", rfc5322_date(self.date));
        out
    }
}

/// The `Received:` field of a message a local user handed in without
/// SMTP (the sendmail command): no client, so only who, as Postfix writes
/// it for its own sendmail. The uid is the one the kernel vouches for.
pub fn received_from_user(hostname: &str, uid: u32, id: &str, date: UnixTime) -> String {
    format!(
        "Received: by {hostname} (mailroom, from userid {uid})\n\tid {id};\n\t{}\n",
        rfc5322_date(date)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> UnixTime {
        UnixTime::from_secs(secs)
    }

    #[test]
    fn dates() {
        let cases = [
            (0, "Thu, 1 Jan 1970 00:00:00 +0000"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_795_358_400, "Sun, 22 Nov 2026 14:40:00 +0000"),
            (4_133_980_799, "Fri, 31 Dec 2100 23:59:59 +0000"),
        ];
        for (secs, rfc) in cases {
            assert_eq!(rfc5322_date(at(secs)), rfc);
        }
        assert_eq!(asctime(at(1_795_358_400)), "Sun Nov 22 14:40:00 2026");
        assert_eq!(asctime(at(0)), "Thu Jan  1 00:00:00 1970");
    }

    #[test]
    fn queue_ids_are_unique_and_sortable() {
        let a = queue_id(at(1_795_358_400), 0);
        let b = queue_id(at(1_795_358_400), 1);
        assert_ne!(a, b);
        assert_eq!(a.len(), 18);
        assert_eq!(a, "06B02FEC0000000000");
        assert!(queue_id(at(1_795_358_401), 0) > b);
        let later = UnixTime {
            secs: 1_795_358_400,
            micros: 999_999,
        };
        assert!(queue_id(later, 0) > b);
        // Only the low 16 bits of the sequence are written.
        assert_eq!(queue_id(at(0), 0x1_0001), queue_id(at(0), 1));
    }

    #[test]
    fn received_from_a_local_user() {
        assert_eq!(
            received_from_user("box.example", 1000, "06B02FEC0000000000", at(1_795_358_400)),
            "Received: by box.example (mailroom, from userid 1000)\n\tid 06B02FEC0000000000;\n\tSun, 22 Nov 2026 14:40:00 +0000\n"
        );
    }

    #[test]
    fn received_field() {
        let tcp = |addr: &str, name: Option<&str>| Peer::Tcp {
            addr: addr.parse().unwrap(),
            name: name.map(str::to_string),
        };
        let v4 = tcp("[::ffff:192.0.2.7]:25", None);
        let r = Received {
            helo: "client.example",
            peer: &v4,
            hostname: "mx.example.org",
            protocol: "ESMTP",
            tls: None,
            id: "ID1",
            recipient: Some("alice@example.org"),
            date: at(1_795_358_400),
        };
        assert_eq!(
            r.render(),
            "Received: from client.example (unknown [192.0.2.7])\n\tby mx.example.org (mailroom) with ESMTP id ID1\n\tfor <alice@example.org>;\n\tSun, 22 Nov 2026 14:40:00 +0000\n"
        );
        let localhost = tcp("[::1]:25", Some("localhost"));
        let v6 = Received {
            peer: &localhost,
            recipient: None,
            ..r
        };
        assert!(v6
            .render()
            .starts_with("Received: from client.example (localhost [IPv6:::1])\n"));
        assert!(!v6.render().contains("for <"));
        let info = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_256_GCM_SHA384".into(),
            key_exchange: Some("X25519".into()),
        };
        let tls = Received {
            protocol: "ESMTPS",
            tls: Some(&info),
            ..v6
        };
        assert!(tls.render().starts_with(
            "Received: from client.example (localhost [IPv6:::1])\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 key-exchange X25519)\n\tby mx.example.org (mailroom) with ESMTPS id ID1;\n"
        ));
    }

    #[test]
    fn received_field_for_a_local_program() {
        let me = Peer::Local {
            uid: 1000,
            user: "alice".into(),
        };
        let r = Received {
            helo: "box.example",
            peer: &me,
            hostname: "mx.example.org",
            protocol: "ESMTP",
            tls: None,
            id: "ID2",
            recipient: None,
            date: at(1_795_358_400),
        };
        assert_eq!(
            r.render(),
            "Received: from box.example\n\tby mx.example.org (mailroom, from userid 1000) with ESMTP id ID2;\n\tSun, 22 Nov 2026 14:40:00 +0000\n"
        );
    }
}
