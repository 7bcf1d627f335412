//! A queue file's text, without IO: the envelope written once at its top
//! (sender, recipients, DSN parameters, the message's size), and the
//! records appended after the message as recipients are tried (sent,
//! failed, deferred, done, reported). What is to be done next is derived
//! from the records ([`State`]), never stored beside them, so that it
//! cannot disagree with them.
//!
//! A record is one line with a checksum: a line torn by a crash (no line
//! end, or a wrong sum) is not a record, and the file is cut back to the
//! last whole one before anything is appended. Every field that can hold
//! text is percent-encoded, so that a record is space-separated tokens
//! whatever an address or a remote server's reply contains.

use std::collections::HashSet;
use std::fmt::{self, Write as _};

const MAGIC: &str = "mailroom-queue 1";
/// The longest envelope header read back; a file past it is not ours.
pub const MAX_HEADER: usize = 1 << 20;

pub use crate::smtp::command::{Notify, Ret};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    pub address: String,
    pub notify: Option<Notify>,
    /// RFC 3461 ORCPT, as given (`rfc822;a@b.example`, xtext decoded).
    pub orcpt: Option<String>,
}

impl Rcpt {
    pub fn new(address: impl Into<String>) -> Rcpt {
        Rcpt {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }

    /// Whether a failure of this recipient is reported to the sender.
    pub fn reports_failure(&self) -> bool {
        self.notify.is_none_or(|n| n.failure)
    }

    pub fn reports_delay(&self) -> bool {
        self.notify.is_none_or(|n| n.delay)
    }
}

/// What is known of a queued message when it is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    /// Seconds since the epoch.
    pub arrived: i64,
    /// The reverse path; empty for the null sender.
    pub sender: String,
    /// The local user who handed it in (sendmail), if one did.
    pub uid: Option<u32>,
    /// The maildrop file it was picked up from, if it was: a drop still
    /// there after a crash is this message, not a new one.
    pub drop: Option<String>,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    pub recipients: Vec<Rcpt>,
    /// The message's length in octets, which follows the envelope.
    pub size: u64,
}

impl Envelope {
    /// The envelope as written at the top of a queue file; the message
    /// follows it directly.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(256);
        let _ = writeln!(s, "{MAGIC}");
        let _ = writeln!(s, "id {}", enc(&self.id));
        let _ = writeln!(s, "arrived {}", self.arrived);
        let _ = writeln!(s, "sender {}", enc(&self.sender));
        if let Some(uid) = self.uid {
            let _ = writeln!(s, "uid {uid}");
        }
        if let Some(drop) = &self.drop {
            let _ = writeln!(s, "drop {}", enc(drop));
        }
        match self.ret {
            Some(Ret::Full) => s.push_str("ret full\n"),
            Some(Ret::Hdrs) => s.push_str("ret hdrs\n"),
            None => {}
        }
        if let Some(envid) = &self.envid {
            let _ = writeln!(s, "envid {}", enc(envid));
        }
        for r in &self.recipients {
            let notify = r.notify.map_or("-".to_string(), Notify::words);
            let orcpt = r.orcpt.as_deref().map_or("-".to_string(), enc);
            let _ = writeln!(s, "rcpt {notify} {orcpt} {}", enc(&r.address));
        }
        let _ = writeln!(s, "data {}", self.size);
        s
    }

    /// Reads an envelope from the start of a queue file; returns it and
    /// the offset where the message starts.
    pub fn decode(text: &[u8]) -> Result<(Envelope, usize), BadFile> {
        let mut lines = Lines { text, at: 0 };
        if lines.next()? != MAGIC {
            return Err(BadFile("not a mailroom queue file".into()));
        }
        let mut env = Envelope {
            id: String::new(),
            arrived: 0,
            sender: String::new(),
            uid: None,
            drop: None,
            ret: None,
            envid: None,
            recipients: Vec::new(),
            size: 0,
        };
        loop {
            let line = lines.next()?;
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "id" => env.id = dec(value)?,
                "arrived" => env.arrived = number(value)?,
                "sender" => env.sender = dec(value)?,
                "uid" => env.uid = Some(number(value)?),
                "drop" => env.drop = Some(dec(value)?),
                "ret" => {
                    env.ret = Some(match value {
                        "full" => Ret::Full,
                        "hdrs" => Ret::Hdrs,
                        _ => return Err(bad(line)),
                    })
                }
                "envid" => env.envid = Some(dec(value)?),
                "rcpt" => {
                    let mut t = value.split(' ');
                    let (Some(notify), Some(orcpt), Some(address), None) =
                        (t.next(), t.next(), t.next(), t.next())
                    else {
                        return Err(bad(line));
                    };
                    env.recipients.push(Rcpt {
                        address: dec(address)?,
                        notify: parse_notify(notify).ok_or_else(|| bad(line))?,
                        orcpt: (orcpt != "-").then(|| dec(orcpt)).transpose()?,
                    });
                }
                "data" => {
                    env.size = number(value)?;
                    break;
                }
                _ => return Err(bad(line)),
            }
        }
        if env.id.is_empty() || env.recipients.is_empty() {
            return Err(BadFile("an envelope without id or recipients".into()));
        }
        Ok((env, lines.at))
    }
}

fn parse_notify(s: &str) -> Option<Option<Notify>> {
    match s {
        "-" => Some(None),
        _ => Notify::parse(s).map(Some),
    }
}

/// The lines of an envelope header, bounded.
struct Lines<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Result<&'a str, BadFile> {
        let rest = &self.text[self.at..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .filter(|_| self.at < MAX_HEADER)
            .ok_or_else(|| BadFile("the envelope has no end".into()))?;
        self.at += end + 1;
        std::str::from_utf8(&rest[..end]).map_err(|_| BadFile("the envelope is not UTF-8".into()))
    }
}

/// A queue file that cannot be read as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFile(pub String);

impl fmt::Display for BadFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(line: &str) -> BadFile {
    let shown: String = line.chars().take(80).collect();
    BadFile(format!("a bad envelope line: {shown:?}"))
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, BadFile> {
    s.parse().map_err(|_| bad(s))
}

/// How a copy left our hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// Into a mailbox (or a pipe) here.
    Delivered,
    /// To a relay that does not report on it (no DSN).
    Relayed,
    /// To a relay that took the DSN request: reporting is its job now.
    Passed,
}

impl Handed {
    fn as_str(self) -> &'static str {
        match self {
            Handed::Delivered => "delivered",
            Handed::Relayed => "relayed",
            Handed::Passed => "passed",
        }
    }

    fn parse(s: &str) -> Option<Handed> {
        match s {
            "delivered" => Some(Handed::Delivered),
            "relayed" => Some(Handed::Relayed),
            "passed" => Some(Handed::Passed),
            _ => None,
        }
    }
}

/// What happened to a recipient, appended as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// One of the recipient's copies (an alias member, or the relay's
    /// acceptance) is made; it is not made again.
    Sent {
        rcpt: usize,
        at: i64,
        dest: String,
        how: Handed,
    },
    /// One of its copies failed for good; it is reported and not tried
    /// again.
    Failed {
        rcpt: usize,
        at: i64,
        status: String,
        dest: String,
        /// Who hears of it when not the sender: a list's owner.
        notify: Option<String>,
        reason: String,
    },
    /// A copy failed and may work later: the recipient is tried again.
    Deferred {
        rcpt: usize,
        at: i64,
        status: String,
        reason: String,
    },
    /// Nothing is left to try for the recipient.
    Done { rcpt: usize, at: i64 },
    /// Every failure recorded before this line is reported, in notice `id`
    /// (or to nobody, when `id` is `-`).
    Reported { at: i64, id: String },
    /// The one "delayed" notice for the message has been sent.
    Warned { at: i64, id: String },
}

impl Record {
    /// The record's line, with its checksum and line end.
    pub fn encode(&self) -> String {
        let body = match self {
            Record::Sent {
                rcpt,
                at,
                dest,
                how,
            } => format!("sent {rcpt} {at} {} {}", enc(dest), how.as_str()),
            Record::Failed {
                rcpt,
                at,
                status,
                dest,
                notify,
                reason,
            } => format!(
                "failed {rcpt} {at} {} {} {} {}",
                enc(status),
                enc(dest),
                notify.as_deref().map_or("-".into(), enc),
                enc(reason)
            ),
            Record::Deferred {
                rcpt,
                at,
                status,
                reason,
            } => format!("deferred {rcpt} {at} {} {}", enc(status), enc(reason)),
            Record::Done { rcpt, at } => format!("done {rcpt} {at}"),
            Record::Reported { at, id } => format!("reported {at} {}", enc(id)),
            Record::Warned { at, id } => format!("warned {at} {}", enc(id)),
        };
        format!("{body} #{:08x}\n", checksum(body.as_bytes()))
    }

    fn decode(line: &str) -> Option<Record> {
        let (body, sum) = line.rsplit_once(" #")?;
        if u32::from_str_radix(sum, 16).ok()? != checksum(body.as_bytes()) || sum.len() != 8 {
            return None;
        }
        let t: Vec<&str> = body.split(' ').collect();
        let n = |i: usize| t.get(i).and_then(|s| s.parse::<i64>().ok());
        let r = |i: usize| t.get(i).and_then(|s| s.parse::<usize>().ok());
        let s = |i: usize| t.get(i).and_then(|s| dec(s).ok());
        let record = match (t[0], t.len()) {
            ("sent", 5) => Record::Sent {
                rcpt: r(1)?,
                at: n(2)?,
                dest: s(3)?,
                how: Handed::parse(t[4])?,
            },
            ("failed", 7) => Record::Failed {
                rcpt: r(1)?,
                at: n(2)?,
                status: s(3)?,
                dest: s(4)?,
                notify: (t[5] != "-").then(|| s(5)).flatten(),
                reason: s(6)?,
            },
            ("deferred", 5) => Record::Deferred {
                rcpt: r(1)?,
                at: n(2)?,
                status: s(3)?,
                reason: s(4)?,
            },
            ("done", 3) => Record::Done {
                rcpt: r(1)?,
                at: n(2)?,
            },
            ("reported", 3) => Record::Reported {
                at: n(1)?,
                id: s(2)?,
            },
            ("warned", 3) => Record::Warned {
                at: n(1)?,
                id: s(2)?,
            },
            _ => return None,
        };
        Some(record)
    }
}

/// The whole records at the start of `text`, and how many octets they
/// take: anything after them (a torn line) is to be cut off.
pub fn decode_records(text: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut good = 0;
    while let Some(end) = text[good..].iter().position(|&b| b == b'\n') {
        let Some(record) = std::str::from_utf8(&text[good..good + end])
            .ok()
            .and_then(Record::decode)
        else {
            break;
        };
        records.push(record);
        good += end + 1;
    }
    (records, good)
}

/// FNV-1a: enough to tell a torn or garbled line from a whole one.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Percent-encodes what would break a token: space, `%`, `#`, controls,
/// and the empty string (as `%`).
fn enc(s: &str) -> String {
    if s.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == ' ' || c == '%' || c == '#' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn dec(s: &str) -> Result<String, BadFile> {
    if s == "%" {
        return Ok(String::new());
    }
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| bad(s))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad(s))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(s))
}

/// How often a recipient is tried, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Seconds before the first retry; doubled after each.
    pub retry_first: u64,
    pub retry_max: u64,
    /// Seconds after arrival when a recipient still not delivered fails.
    pub lifetime: u64,
    /// Seconds after arrival when the sender is told of the delay; 0: never.
    pub delay_warning: u64,
}

impl Policy {
    /// The wait after the `attempts`-th failed attempt (RFC 5321
    /// 4.5.4.1: at least 30 minutes is advised; the first retry comes
    /// sooner, as Postfix's does, and the wait doubles).
    pub fn backoff(&self, attempts: u32) -> u64 {
        if attempts == 0 {
            return 0;
        }
        let doubled = self
            .retry_first
            .saturating_mul(1u64 << (attempts - 1).min(32));
        doubled.min(self.retry_max.max(self.retry_first))
    }
}

/// One recipient's state, from its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptState {
    pub done: bool,
    /// Attempts that deferred it.
    pub attempts: u32,
    pub last_attempt: Option<i64>,
    /// The last deferral's status and reason.
    pub last_error: Option<(String, String)>,
    /// Copies made or failed for good: not tried again.
    pub settled: HashSet<String>,
}

/// A queued message's state: its envelope's recipients with their
/// records applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub recipients: Vec<RcptState>,
    /// Records not yet reported, by their place in the records: failures,
    /// and copies made whose recipient asked to hear of them
    /// (NOTIFY=SUCCESS) and that no relay reports on.
    pub unreported: Vec<usize>,
    pub warned: bool,
}

impl State {
    pub fn of(env: &Envelope, records: &[Record]) -> State {
        let mut s = State {
            recipients: vec![RcptState::default(); env.recipients.len()],
            unreported: Vec::new(),
            warned: false,
        };
        for (i, record) in records.iter().enumerate() {
            let n = match record {
                Record::Sent { rcpt, .. }
                | Record::Failed { rcpt, .. }
                | Record::Deferred { rcpt, .. }
                | Record::Done { rcpt, .. } => *rcpt,
                Record::Reported { .. } => {
                    s.unreported.clear();
                    continue;
                }
                Record::Warned { .. } => {
                    s.warned = true;
                    continue;
                }
            };
            // A record for a recipient the envelope lacks is not ours to
            // apply; the checksum makes it all but impossible anyway.
            let Some(r) = s.recipients.get_mut(n) else {
                continue;
            };
            match record {
                Record::Sent { dest, how, .. } => {
                    r.settled.insert(dest.clone());
                    let asked = env.recipients[n].notify.is_some_and(|n| n.success);
                    if asked && *how != Handed::Passed {
                        s.unreported.push(i);
                    }
                }
                Record::Failed { dest, .. } => {
                    r.settled.insert(dest.clone());
                    s.unreported.push(i);
                }
                Record::Deferred {
                    at, status, reason, ..
                } => {
                    r.attempts += 1;
                    r.last_attempt = Some(*at);
                    r.last_error = Some((status.clone(), reason.clone()));
                }
                Record::Done { .. } => r.done = true,
                Record::Reported { .. } | Record::Warned { .. } => {}
            }
        }
        s
    }

    /// The recipients still to be tried.
    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.recipients.len()).filter(|&n| !self.recipients[n].done)
    }

    /// When the next attempt is due, if any recipient is left.
    pub fn next_attempt(&self, policy: &Policy) -> Option<i64> {
        self.pending()
            .map(|n| {
                let r = &self.recipients[n];
                r.last_attempt.map_or(i64::MIN, |at| {
                    at.saturating_add(policy.backoff(r.attempts) as i64)
                })
            })
            .min()
    }

    /// Nothing is left to try or to report: the file can go.
    pub fn finished(&self) -> bool {
        self.pending().next().is_none() && self.unreported.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            id: "06B02FEC0000000000".into(),
            arrived: 1_795_358_400,
            sender: "alice@example.org".into(),
            uid: Some(1000),
            drop: Some("3f2a".into()),
            ret: Some(Ret::Hdrs),
            envid: Some("QQ 314159".into()),
            recipients: vec![
                Rcpt::new("bob@remote.example"),
                Rcpt {
                    address: "\"john doe\"@example.org".into(),
                    notify: Some(Notify {
                        success: true,
                        failure: true,
                        delay: false,
                    }),
                    orcpt: Some("rfc822;john@example.org".into()),
                },
                Rcpt {
                    address: "carol@localhost".into(),
                    notify: Some(Notify::NEVER),
                    orcpt: None,
                },
            ],
            size: 12,
        }
    }

    #[test]
    fn an_envelope_reads_back_as_written() {
        let env = envelope();
        let mut file = env.encode().into_bytes();
        let start = file.len();
        file.extend_from_slice(b"Subject: x\n\n");
        let (back, at) = Envelope::decode(&file).unwrap();
        assert_eq!(back, env);
        assert_eq!(at, start);

        let null = Envelope {
            sender: String::new(),
            uid: None,
            drop: None,
            ret: None,
            envid: None,
            ..envelope()
        };
        assert_eq!(Envelope::decode(null.encode().as_bytes()).unwrap().0, null);
    }

    #[test]
    fn bad_envelopes_are_refused() {
        let good = envelope().encode();
        let cases = [
            String::new(),
            "something else\n".into(),
            good.replace("data 12\n", ""),
            good.replace("ret hdrs", "ret most"),
            good.replace("arrived 1795358400", "arrived soon"),
            good.replace("rcpt - - bob@remote.example", "rcpt - bob@remote.example"),
            good.replace("rcpt - -", "rcpt often -"),
            good.replace("id 06B02FEC0000000000\n", ""),
            good.replace("QQ%20", "QQ%G0"),
            good.replace("QQ%20314159", "QQ%2"),
            good.replace("uid 1000", "color blue"),
        ];
        for case in cases {
            assert!(Envelope::decode(case.as_bytes()).is_err(), "{case:?}");
        }
    }

    fn records() -> Vec<Record> {
        vec![
            Record::Deferred {
                rcpt: 0,
                at: 100,
                status: "4.4.1".into(),
                reason: "connect to relay: refused #1 | 100%".into(),
            },
            Record::Sent {
                rcpt: 1,
                at: 101,
                dest: "\"john doe\"@example.org".into(),
                how: Handed::Delivered,
            },
            Record::Failed {
                rcpt: 2,
                at: 102,
                status: "5.1.1".into(),
                dest: "carol@localhost".into(),
                notify: Some("owner-list@localhost".into()),
                reason: "550 5.1.1 no such user\r\nsecond line".into(),
            },
            Record::Done { rcpt: 2, at: 102 },
            Record::Reported {
                at: 103,
                id: "06B02FEC0000100000".into(),
            },
            Record::Warned {
                at: 104,
                id: String::new(),
            },
        ]
    }

    #[test]
    fn records_read_back_as_written_and_a_torn_one_is_not_a_record() {
        let text: String = records().iter().map(Record::encode).collect();
        assert_eq!(text.lines().count(), 6, "one line each: {text}");
        assert_eq!(decode_records(text.as_bytes()), (records(), text.len()));

        let last = text.len() - records()[5].encode().len();
        // Torn anywhere inside the last line: only the lines before it count.
        for cut in last..text.len() {
            assert_eq!(
                decode_records(&text.as_bytes()[..cut]),
                (records()[..5].to_vec(), last),
                "cut at {cut}"
            );
        }
        // A garbled byte in a line ends the records there.
        let mut garbled = text.clone().into_bytes();
        garbled[last + 3] ^= 0x20;
        assert_eq!(decode_records(&garbled).1, last);
    }

    #[test]
    fn state_is_derived_from_the_records() {
        let env = envelope();
        let policy = Policy {
            retry_first: 300,
            retry_max: 3600,
            lifetime: 5 * 86400,
            delay_warning: 4 * 3600,
        };
        let fresh = State::of(&env, &[]);
        assert_eq!(fresh.pending().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(fresh.next_attempt(&policy), Some(i64::MIN));
        assert!(!fresh.finished());

        let s = State::of(&env, &records()[..4]);
        assert_eq!(s.pending().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(s.recipients[0].attempts, 1);
        assert_eq!(
            s.recipients[0].last_error.as_ref().unwrap().0,
            "4.4.1".to_string()
        );
        assert!(s.recipients[1].settled.contains("\"john doe\"@example.org"));
        assert_eq!(s.unreported, [1, 2]);
        // Recipient 1 has not been tried and is due now.
        assert_eq!(s.next_attempt(&policy), Some(i64::MIN));

        let mut rs = records();
        rs.insert(2, Record::Done { rcpt: 1, at: 101 });
        let s = State::of(&env, &rs);
        assert_eq!(s.next_attempt(&policy), Some(400));
        assert!(s.unreported.is_empty() && s.warned);
        rs.push(Record::Done { rcpt: 0, at: 500 });
        assert!(State::of(&env, &rs).finished());
        assert_eq!(State::of(&env, &rs).next_attempt(&policy), None);
    }

    #[test]
    fn retries_back_off_doubling_up_to_the_maximum() {
        let p = Policy {
            retry_first: 300,
            retry_max: 3600,
            lifetime: 0,
            delay_warning: 0,
        };
        let waits: Vec<u64> = (0..7).map(|n| p.backoff(n)).collect();
        assert_eq!(waits, [0, 300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(p.backoff(u32::MAX), 3600);
    }

    /// Drops come from users: whatever bytes a file holds, reading it as
    /// an envelope and records ends in a value or an error, never a panic.
    #[test]
    fn hostile_bytes_never_panic() {
        let good = envelope().encode().into_bytes();
        let records: String = records().iter().map(Record::encode).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let mut bytes = if round % 2 == 0 {
                good.clone()
            } else {
                records.clone().into_bytes()
            };
            for _ in 0..(next() % 8) {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, b" %#\n-"[(next() % 5) as usize]),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let _ = Envelope::decode(&bytes);
            let (decoded, good_len) = decode_records(&bytes);
            assert!(good_len <= bytes.len());
            let _ = State::of(&envelope(), &decoded);
        }
    }

    #[test]
    fn encoding_survives_any_text() {
        for s in ["", "%", "a b", "#x", "100%", "ü é", "\n\r\t", "%20"] {
            assert_eq!(dec(&enc(s)).unwrap(), s);
            assert!(!enc(s).contains([' ', '\n', '#']));
        }
    }
}
