//! Durability of local delivery against the real server: what is in the
//! mailboxes after concurrent sessions, a crash (SIGKILL) at any moment, a
//! crash in the middle of an mbox append (also when the mbox is locked by
//! someone else while the server starts again), a full disk, and a
//! start-up that finds stale Maildir `tmp/` files.
//!
//! An interrupted append that cannot be undone at start (its mbox is
//! locked) stays journaled, and nothing is appended to that mbox until it
//! has been undone.
//!
//! Every message these tests send is generated from its Subject alone (the
//! Subject names its size; the body comes from a PRNG seeded with the
//! Subject), so that any copy found in a mailbox can be checked byte for
//! byte against what was sent, whoever sent it and whether or not the
//! client was told 250. Bodies contain the lines that mboxrd and SMTP treat
//! specially (`From `, `>From `, `>>From `, leading dots, a lone dot).
//!
//! The checks read the mailboxes with parsers that are not mailroom's: the
//! mboxrd splitter of `support` (which asserts the mbox structure),
//! mail-parser, and, when it is installed, Python's `mailbox.mbox`.

mod support;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use support::*;

const SENDER: &str = "sender@remote.example";
const ALICE: &str = "alice@test.example";
const CAROL: &str = "carol@test.example";
/// What the server logs when its start-up undoes (or finds nothing to
/// undo of) an mbox append that a crash interrupted.
const RECOVERED: &str = "recovered an append interrupted at";

// ---------------------------------------------------------------------------
// Test messages
// ---------------------------------------------------------------------------

/// splitmix64: a small deterministic PRNG, so that a body can be made again
/// from its seed when it is checked.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// FNV-1a, to seed a body from its Subject.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One message as sent and as it must be stored.
struct TestMessage {
    subject: String,
    /// What follows DATA: CRLF line ends, dot-stuffed, without the final
    /// `.` line.
    wire: Vec<u8>,
    /// What mailroom must store after the fields it adds: LF line ends,
    /// dots unstuffed.
    stored: Vec<u8>,
}

/// A Subject that names the message's size, so that the message can be
/// made again from the Subject alone.
fn subject(tag: &str, size: usize) -> String {
    format!("{tag} ({size} bytes)")
}

/// The message with this Subject (one made by [`subject`]): a header, then
/// lines of text until the stored form has at least the size the Subject
/// names.
fn message(subject: &str) -> TestMessage {
    let size: usize = subject
        .rsplit_once('(')
        .and_then(|(_, s)| s.strip_suffix(" bytes)"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no size in the subject {subject:?}"));
    const TEXT: &[u8] =
        b"The quick brown fox jumps over the lazy dog; 0123456789 PACK MY BOX WITH FIVE DOZEN LIQUOR JUGS! ";
    let mut rng = Rng(fnv(subject));
    let mut wire = Vec::with_capacity(size + size / 20 + 256);
    let mut stored = Vec::with_capacity(size + 256);
    let line = |text: &[u8], wire: &mut Vec<u8>, stored: &mut Vec<u8>| {
        if text.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(text);
        wire.extend_from_slice(b"\r\n");
        stored.extend_from_slice(text);
        stored.push(b'\n');
    };
    let header = format!(
        "Subject: {subject}\nFrom: <{SENDER}>\nMessage-ID: <{:016x}@remote.example>\n",
        fnv(subject)
    );
    for l in header.lines() {
        line(l.as_bytes(), &mut wire, &mut stored);
    }
    line(b"", &mut wire, &mut stored);
    let mut n = 0u64;
    while stored.len() < size {
        n += 1;
        let text: Vec<u8> = match rng.below(24) {
            0 => format!("From here, line {n}").into_bytes(),
            1 => b">From there".to_vec(),
            2 => b">>From far away".to_vec(),
            3 => b".a line with a leading dot".to_vec(),
            4 => b".".to_vec(),
            5 => b"..".to_vec(),
            6 => Vec::new(),
            7 => b"From".to_vec(),
            8 => format!("From {SENDER} Thu Jan  1 00:00:00 1970").into_bytes(),
            _ => {
                let start = rng.below(TEXT.len() as u64) as usize;
                let len = rng.below(200) as usize;
                // Wrapping through the sample text; never a leading "From".
                let mut t = Vec::with_capacity(len + 8);
                t.extend_from_slice(format!("{n:06} ").as_bytes());
                t.extend(TEXT.iter().cycle().skip(start).take(len));
                t
            }
        };
        line(&text, &mut wire, &mut stored);
    }
    TestMessage {
        subject: subject.to_string(),
        wire,
        stored,
    }
}

/// Checks one stored copy (a Maildir file, or a message from an mbox with
/// its `From ` line and quoting gone): the fields mailroom prepends
/// (`Return-Path:`, `Delivered-To:`, our `Received:`), then exactly the
/// message that its Subject names. Returns the Subject.
fn check_copy(copy: &[u8], rcpt: &str) -> Result<String, String> {
    let head = format!("Return-Path: <{SENDER}>\nDelivered-To: {rcpt}\nReceived: ");
    if !copy.starts_with(head.as_bytes()) {
        return Err(format!(
            "a copy does not start with {head:?}: {:?}",
            String::from_utf8_lossy(&copy[..copy.len().min(200)])
        ));
    }
    // The rest of the Received: field: its first line and the folded ones.
    let line_end = |from: usize| {
        copy[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| from + i + 1)
            .ok_or_else(|| "a copy ends inside its Received: field".to_string())
    };
    let mut pos = line_end(head.len())?;
    while matches!(copy.get(pos), Some(b'\t' | b' ')) {
        pos = line_end(pos)?;
    }
    let original = &copy[pos..];
    let first = &original[..line_end(pos)? - pos - 1];
    let subject = std::str::from_utf8(first)
        .ok()
        .and_then(|l| l.strip_prefix("Subject: "))
        .ok_or_else(|| {
            format!(
                "after the Received: field comes {:?}, not our Subject",
                String::from_utf8_lossy(&first[..first.len().min(200)])
            )
        })?;
    let want = message(subject);
    if original != want.stored.as_slice() {
        let at = original
            .iter()
            .zip(&want.stored)
            .position(|(a, b)| a != b)
            .unwrap_or(original.len().min(want.stored.len()));
        return Err(format!(
            "{subject:?}: stored {} bytes, sent {} (after conversion to LF); first difference at byte {at}",
            original.len(),
            want.stored.len()
        ));
    }
    Ok(want.subject)
}

// ---------------------------------------------------------------------------
// A client that reports IO errors instead of panicking (a crashed server
// is expected in some tests)
// ---------------------------------------------------------------------------

struct Wire {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Wire {
    /// Connects, reads the greeting and says EHLO.
    fn connect(addr: SocketAddr) -> io::Result<Wire> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut w = Wire { stream, reader };
        let (code, text) = w.reply()?;
        if code != 220 {
            return Err(io::Error::other(format!("greeting {code} {text}")));
        }
        let (code, text) = w.cmd("EHLO client.test.example")?;
        if code != 250 {
            return Err(io::Error::other(format!("EHLO got {code} {text}")));
        }
        Ok(w)
    }

    /// One reply: its code and its text (lines joined with LF).
    fn reply(&mut self) -> io::Result<(u16, String)> {
        let mut text = String::new();
        for _ in 0..100 {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}"));
            if line.len() < 6 || !line.ends_with("\r\n") {
                return Err(bad());
            }
            let code: u16 = line[..3].parse().map_err(|_| bad())?;
            text.push_str(&line[4..line.len() - 2]);
            match line.as_bytes()[3] {
                b' ' => return Ok((code, text)),
                b'-' => text.push('\n'),
                _ => return Err(bad()),
            }
        }
        Err(io::Error::other("a reply of more than 100 lines"))
    }

    fn cmd(&mut self, line: &str) -> io::Result<(u16, String)> {
        self.stream.write_all(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// One transaction; returns the first reply that is not the expected
    /// one, or the final reply to the message.
    fn mail(&mut self, to: &[&str], msg: &TestMessage) -> io::Result<(u16, String)> {
        let r = self.cmd(&format!("MAIL FROM:<{SENDER}>"))?;
        if r.0 != 250 {
            return Ok(r);
        }
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"))?;
            if r.0 != 250 {
                return Ok(r);
            }
        }
        let r = self.cmd("DATA")?;
        if r.0 != 354 {
            return Ok(r);
        }
        self.stream.write_all(&msg.wire)?;
        self.stream.write_all(b".\r\n")?;
        self.reply()
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The configuration with an mbox mailbox `carol` at `{dir}/mail/carol.mbox`
/// (beside the base configuration's Maildirs) and these `[server]` keys.
/// The directory is made here: mailroom creates a missing Maildir, but not
/// the directory of an mbox (like a system's /var/mail, it must exist).
fn config_with_carol(dir: &Path, server: &str) -> (String, PathBuf) {
    config_with_carol_and(dir, server, "")
}

/// [`config_with_carol`] with more tables.
fn config_with_carol_and(dir: &Path, server: &str, tables: &str) -> (String, PathBuf) {
    std::fs::create_dir_all(dir.join("mail")).unwrap();
    let mbox = dir.join("mail").join("carol.mbox");
    let tables = format!("[mailbox.carol]\nmbox = \"{}\"\n{tables}", mbox.display());
    (base_config(dir, "", server, &tables), mbox)
}

/// The `.lock` file beside an mbox.
fn lock_path(mbox: &Path) -> PathBuf {
    let mut name = mbox.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The names of the files in a directory (none if it is missing).
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// How many records the mbox journal holds (its files are reused: an
/// empty one holds none).
fn journal_records(dir: &Path) -> usize {
    names(dir)
        .iter()
        .filter(|n| std::fs::metadata(dir.join(n)).is_ok_and(|m| m.len() > 0))
        .count()
}

/// Checks every copy in a list and counts them by Subject.
fn count_copies(copies: &[Vec<u8>], rcpt: &str, what: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (i, copy) in copies.iter().enumerate() {
        let subject = check_copy(copy, rcpt).unwrap_or_else(|e| panic!("{what}, copy {i}: {e}"));
        *counts.entry(subject).or_insert(0) += 1;
    }
    counts
}

/// The Subjects of an mbox as Python's `mailbox.mbox` reads it, or `None`
/// when python3 is not installed (then the caller's check is skipped).
fn python_subjects(mbox: &Path) -> Option<Vec<String>> {
    if !tool("python3") {
        return None;
    }
    let script = "import mailbox, sys\n\
                  box = mailbox.mbox(sys.argv[1], create=False)\n\
                  subjects = [m['Subject'] for m in box]\n\
                  print(len(subjects))\n\
                  for s in subjects: print(s)\n";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(mbox)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 could not read the mbox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let n: usize = lines.next().unwrap().parse().unwrap();
    let subjects: Vec<String> = lines.map(str::to_string).collect();
    assert_eq!(subjects.len(), n, "python3 printed {text}");
    Some(subjects)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Ten sessions deliver into one mbox at the same time: the locks must
/// keep every append whole, so the mbox holds exactly the hundred messages
/// sent, each byte for byte, none twice.
#[test]
fn concurrent_sessions_never_interleave_in_one_mbox() {
    const THREADS: usize = 10;
    const EACH: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let (text, mbox) = config_with_carol(dir.path(), "workers = 12\nmax_connections_per_ip = 12");
    let srv = Server::start_config(dir, &text);
    let addr = srv.addr;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng(t as u64);
                let mut c = Wire::connect(addr).expect("connect");
                let mut sent = Vec::new();
                for i in 0..EACH {
                    // 1 KB to 300 KB.
                    let size = 1024 + rng.below(299 * 1024) as usize;
                    let msg = message(&subject(&format!("concurrent t{t} m{i}"), size));
                    let (code, reply) = c.mail(&[CAROL], &msg).expect("a reply");
                    assert_eq!(code, 250, "{}: {code} {reply}", msg.subject);
                    sent.push(msg.subject);
                }
                let _ = c.cmd("QUIT");
                sent
            })
        })
        .collect();
    let mut sent: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a client thread failed"))
        .collect();
    sent.sort();

    // Every `From ` line inside a body is quoted, so the only unquoted
    // ones are the hundred that start messages.
    let raw = std::fs::read(&mbox).unwrap();
    let from_lines: Vec<&[u8]> = raw
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"From "))
        .collect();
    assert_eq!(from_lines.len(), THREADS * EACH, "unquoted From lines");
    for l in &from_lines {
        assert!(
            l.starts_with(format!("From {SENDER} ").as_bytes()),
            "{:?}",
            String::from_utf8_lossy(l)
        );
    }
    let copies = mbox_messages(&mbox);
    assert_eq!(copies.len(), THREADS * EACH, "messages in the mbox");
    let counts = count_copies(&copies, CAROL, "carol's mbox");
    let dups: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dups.is_empty(), "stored more than once: {dups:?}");
    let found: Vec<String> = counts.into_keys().collect();
    assert_eq!(found, sent, "the Subjects in the mbox are those sent");
    assert!(!lock_path(&mbox).exists(), "the dot-lock is left behind");

    // A second, independent reader agrees on where the messages are.
    if let Some(mut subjects) = python_subjects(&mbox) {
        assert_eq!(
            subjects.len(),
            THREADS * EACH,
            "python's mailbox.mbox count"
        );
        subjects.sort();
        assert_eq!(subjects, sent, "python's mailbox.mbox subjects");
    }
}

/// What a client of the crash test knows about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Sent, but the server went away before the final reply.
    InFlight,
    Accepted,
    Refused(u16, String),
}

/// Twenty sessions deliver to a Maildir and an mbox at once, and the
/// server is killed in the middle. After a restart (which runs the
/// recovery) every message that got 250 is in both mailboxes exactly once
/// and intact; anything else is absent or intact, at most once; neither
/// mailbox holds a partial message.
#[test]
fn a_crash_loses_no_accepted_message_and_leaves_nothing_partial() {
    const THREADS: usize = 20;
    const MAX_EACH: usize = 40;
    const ENOUGH: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (text, mbox) = config_with_carol(dir.path(), "workers = 24\nmax_connections_per_ip = 64");
    let srv = Server::start_config(dir, &text);
    let addr = srv.addr;
    let outcomes: Arc<Mutex<BTreeMap<String, Outcome>>> = Arc::default();
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (outcomes, accepted, stop) = (outcomes.clone(), accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(1000 + t as u64);
                let Ok(mut c) = Wire::connect(addr) else {
                    return;
                };
                for i in 0..MAX_EACH {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    // 10 KB to 2 MB.
                    let size = 10 * 1024 + rng.below(2 * 1024 * 1024 - 10 * 1024) as usize;
                    let msg = message(&subject(&format!("crash t{t} m{i}"), size));
                    let set = |o: Outcome| {
                        outcomes.lock().unwrap().insert(msg.subject.clone(), o);
                    };
                    set(Outcome::InFlight);
                    match c.mail(&[ALICE, CAROL], &msg) {
                        Ok((250, _)) => {
                            set(Outcome::Accepted);
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((code, text)) => {
                            set(Outcome::Refused(code, text));
                            // Back to a clean state for the next one.
                            if c.cmd("RSET").is_err() {
                                break;
                            }
                        }
                        // The server is gone: this one stays in flight.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    // Crash once enough is accepted, or after three seconds; but first
    // wait (at most one more second) for a moment when an mbox append is
    // under way (a journal record is there and the mbox has grown since
    // the last look), so that the crash cuts one short more often than not.
    let deadline = Instant::now() + Duration::from_secs(3);
    while accepted.load(Ordering::SeqCst) < ENOUGH && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let journal = srv.dir.path().join("spool").join("journal");
    let mbox_len = || std::fs::metadata(&mbox).map_or(0, |m| m.len());
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut last = mbox_len();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        let len = mbox_len();
        if len > last && journal_records(&journal) > 0 {
            break;
        }
        last = len;
    }
    let (dir, old_log) = srv.crash();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let refused: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Refused(..)))
        .collect();
    assert!(refused.is_empty(), "refused before the crash: {refused:?}");
    let n_accepted = outcomes
        .values()
        .filter(|&o| *o == Outcome::Accepted)
        .count();
    let in_flight: BTreeSet<&String> = outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::InFlight)
        .map(|(s, _)| s)
        .collect();
    assert!(
        n_accepted > 0,
        "nothing was accepted before the crash:\n{old_log}"
    );

    // Journal records left by the crash: an mbox append was under way.
    let pending = journal_records(&journal);

    // The restart runs the recovery before it listens.
    let srv = Server::start_config(dir, &text);
    let maildir = srv.maildir("alice");
    let alice = count_copies(&read_maildir(&maildir), ALICE, "alice's Maildir");
    for name in names(&maildir.join("new")) {
        let raw = std::fs::read(maildir.join("new").join(&name)).unwrap();
        // Dovecot and others trust the size in the name.
        let size: usize = name
            .rsplit_once(",S=")
            .and_then(|(_, s)| s.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no S=<size> in the name"));
        assert_eq!(size, raw.len(), "{name}: S= and the file's size differ");
        assert!(
            Parsed::new(raw).subject().is_some(),
            "{name}: mail-parser finds no Subject"
        );
    }
    // mbox_messages asserts that the mbox splits cleanly; a message cut
    // short at its end is the likeliest failure, so say so first.
    let data = std::fs::read(&mbox).unwrap_or_default();
    assert!(
        data.is_empty() || data.ends_with(b"\n\n"),
        "carol's mbox ({} bytes) ends inside a message: an append the crash \
         interrupted was not undone. Log after the restart:\n{}",
        data.len(),
        srv.log()
    );
    let carol = count_copies(&mbox_messages(&mbox), CAROL, "carol's mbox");

    for (subject, outcome) in &outcomes {
        let (a, c) = (
            alice.get(subject).copied().unwrap_or(0),
            carol.get(subject).copied().unwrap_or(0),
        );
        match outcome {
            Outcome::Accepted => assert!(
                (a, c) == (1, 1),
                "{subject:?} got 250 but is {a} times in alice's Maildir and {c} times in carol's mbox\n\
                 log before the crash:\n{old_log}\nlog after:\n{}",
                srv.log()
            ),
            _ => assert!(
                a <= 1 && c <= 1,
                "{subject:?} (no 250) is {a} times in alice's Maildir and {c} times in carol's mbox"
            ),
        }
    }
    for subject in alice.keys().chain(carol.keys()) {
        assert!(outcomes.contains_key(subject), "{subject:?} was never sent");
    }
    let tmp = names(&maildir.join("tmp"));
    let new = names(&maildir.join("new"));
    let both: Vec<_> = tmp.intersection(&new).collect();
    assert!(both.is_empty(), "in both tmp/ and new/: {both:?}");

    let kept_alice = in_flight.iter().filter(|s| alice.contains_key(**s)).count();
    let kept_carol = in_flight.iter().filter(|s| carol.contains_key(**s)).count();
    eprintln!(
        "durability: crash test: {n_accepted} accepted, {} in flight at the crash \
         ({kept_alice} of them kept in alice's Maildir, {kept_carol} in carol's mbox), \
         {} left in tmp/, {pending} journal records left; recovery: {:?}",
        in_flight.len(),
        tmp.len(),
        srv.log()
            .lines()
            .filter_map(|l| l.split_once(RECOVERED).map(|(_, r)| r))
            .collect::<Vec<_>>()
    );
}

/// What [`crash_mid_append`] did.
struct MidAppend {
    /// The directory of the killed server.
    dir: tempfile::TempDir,
    /// The Subject of the message carol's mbox held before.
    first: String,
    /// The mbox before the big message.
    old: Vec<u8>,
    /// The mbox's length when the server was killed, if it had grown.
    seen: Option<u64>,
    /// What the client of the big message got.
    reply: io::Result<(u16, String)>,
}

/// Starts a server with `text` in `dir`, delivers a small message to
/// carol's mbox, then sends `big` to carol and kills the server as soon as
/// the mbox grows (polling every millisecond, for at most a minute).
fn crash_mid_append(
    dir: tempfile::TempDir,
    text: &str,
    mbox: &Path,
    big: &Arc<TestMessage>,
    tag: &str,
) -> MidAppend {
    let srv = Server::start_config(dir, text);
    let first = message(&subject(&format!("before the crash, {tag}"), 2000));
    let mut c = Wire::connect(srv.addr).unwrap();
    assert_eq!(c.mail(&[CAROL], &first).unwrap().0, 250);
    drop(c);
    let old = std::fs::read(mbox).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (addr, big, done) = (srv.addr, big.clone(), done.clone());
        std::thread::spawn(move || {
            let r = Wire::connect(addr).and_then(|mut c| c.mail(&[CAROL], &big));
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    let mut seen = None;
    for _ in 0..60_000 {
        let len = std::fs::metadata(mbox).map_or(0, |m| m.len());
        if len > old.len() as u64 {
            seen = Some(len);
            break;
        }
        if done.load(Ordering::SeqCst) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (dir, _) = srv.crash();
    let reply = sender.join().unwrap();
    MidAppend {
        dir,
        first: first.subject,
        old,
        seen,
        reply,
    }
}

/// The server is killed while it appends a 20 MB message to an mbox. The
/// restart must leave the mbox exactly as it was before (journal recovery)
/// or, if the append and its commit finished first, with the whole new
/// message: never a part of it.
#[test]
fn an_mbox_append_cut_short_by_a_crash_is_undone_at_start() {
    const ATTEMPTS: usize = 3;
    let big_subject = subject("the big one", 20 * 1024 * 1024);
    let big = Arc::new(message(&big_subject));
    let mut truncated = 0;
    let mut report = Vec::new();
    for attempt in 1..=ATTEMPTS {
        let dir = tempfile::tempdir().unwrap();
        let (text, mbox) = config_with_carol(dir.path(), "");
        let m = crash_mid_append(dir, &text, &mbox, &big, &format!("attempt {attempt}"));
        let (old, seen) = (&m.old, m.seen);

        let srv = Server::start_config(m.dir, &text);
        let now = std::fs::read(&mbox).unwrap();
        let log = srv.log();
        let what = if now == *old {
            assert!(
                log.contains(RECOVERED),
                "attempt {attempt}: the mbox is as before, but the log has no recovery:\n{log}"
            );
            truncated += 1;
            "cut back to what it was"
        } else {
            assert!(
                now.starts_with(old),
                "attempt {attempt}: the old content of the mbox changed"
            );
            // (mbox_messages would panic on a partial message; say why first.)
            assert!(
                now.ends_with(b"\n\n"),
                "attempt {attempt}: after the restart the mbox holds {} bytes, the old {} plus \
                 part of a message (it had {} bytes when the server was killed): the interrupted \
                 append was not undone. Log after the restart:\n{log}",
                now.len(),
                old.len(),
                seen.unwrap_or(0)
            );
            let copies = mbox_messages(&mbox);
            assert_eq!(
                copies.len(),
                2,
                "attempt {attempt}: after the restart the mbox has {} bytes (was {}, {} while it grew)",
                now.len(),
                old.len(),
                seen.unwrap_or(0)
            );
            assert_eq!(check_copy(&copies[1], CAROL).unwrap(), big_subject);
            "kept with the whole message"
        };
        assert!(
            !lock_path(&mbox).exists(),
            "attempt {attempt}: the dot-lock is left behind"
        );
        let journal = srv.dir.path().join("spool").join("journal");
        let left = names(&journal);
        assert!(
            left.is_empty(),
            "attempt {attempt}: left in the journal: {left:?}"
        );
        report.push(format!(
            "attempt {attempt}: killed at {} bytes past the old {}, client got {:?}; {what}",
            seen.map_or(0, |s| s - old.len() as u64),
            old.len(),
            m.reply.map(|r| r.0).map_err(|e| e.kind())
        ));
        if truncated > 0 {
            break;
        }
    }
    eprintln!("durability: mid-append crash: {}", report.join("; "));
    assert!(
        truncated > 0,
        "no attempt killed the server in the middle of the append: {report:?}"
    );
}

/// The mailboxes live on a 1 MB tmpfs (in a mount namespace of the
/// server's own, so root only); the spool and the queue do not. A message
/// that does not fit gets 452 4.3.1 and leaves nothing behind: no file in
/// the Maildir, the mbox byte for byte as it was, no lock. A message one of
/// whose copies fits is taken, and the other copy waits in the queue until
/// there is room.
#[test]
fn a_full_disk_gives_452_and_leaves_nothing_behind() {
    if !namespaces_or_skip("a_full_disk_gives_452_and_leaves_nothing_behind") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let (text, mbox) = config_with_carol(dir.path(), "");
    let srv = Server::start_in_namespace(dir, &text, &[], &[(mail.as_path(), "1m")]);
    let maildir = srv.seen(&srv.maildir("alice"));
    let mbox_seen = srv.seen(&mbox);
    let mut c = Wire::connect(srv.addr).unwrap();
    let small = |n: usize| message(&subject(&format!("small {n}"), 1000));
    let big = message(&subject("too big for the disk", 3 * 1024 * 1024));

    assert_eq!(c.mail(&[ALICE], &small(1)).unwrap().0, 250);
    assert_eq!(c.mail(&[CAROL], &small(2)).unwrap().0, 250);
    let new_before = names(&maildir.join("new"));
    assert_eq!(new_before.len(), 1, "the first message, in the tmpfs");
    let mbox_before = std::fs::read(&mbox_seen).unwrap();

    let (code, reply) = c.mail(&[ALICE], &big).unwrap();
    assert_eq!(code, 452, "{reply}\n{}", srv.log());
    assert!(reply.starts_with("4.3.1"), "{reply}");
    assert_eq!(
        names(&maildir.join("new")),
        new_before,
        "new/ after a full disk"
    );
    let tmp = names(&maildir.join("tmp"));
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");

    let (code, reply) = c.mail(&[CAROL], &big).unwrap();
    assert_eq!(code, 452, "{reply}\n{}", srv.log());
    assert!(reply.starts_with("4.3.1"), "{reply}");
    assert!(
        std::fs::read(&mbox_seen).unwrap() == mbox_before,
        "the mbox changed on a full disk"
    );
    assert!(
        !lock_path(&mbox_seen).exists(),
        "the dot-lock is left behind"
    );

    // A message that fits once but not twice: alice's copy is written,
    // carol's cannot be. alice keeps hers, and carol's waits in the queue
    // (alice's recorded as made), her mbox as it was.
    let half = message(&subject("fits once", 600 * 1024));
    let (code, reply) = c.mail(&[ALICE, CAROL], &half).unwrap();
    assert_eq!(code, 250, "{reply}\n{}", srv.log());
    let added: Vec<String> = names(&maildir.join("new"))
        .difference(&new_before)
        .cloned()
        .collect();
    assert_eq!(added.len(), 1, "alice's copy of the half");
    let tmp = names(&maildir.join("tmp"));
    assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
    // The queue tries carol's copy again at once; once that has failed
    // too, her mbox is as it was and unlocked.
    let listing = wait_for("carol's copy retried from the queue", || {
        let l = mailq(&srv.config_path).stdout;
        l.contains("(4.3.1").then_some(l)
    });
    assert!(listing.contains(CAROL), "{listing}");
    assert!(
        std::fs::read(&mbox_seen).unwrap() == mbox_before,
        "the mbox changed"
    );
    assert!(
        !lock_path(&mbox_seen).exists(),
        "the dot-lock is left behind"
    );

    // Once alice has taken her copy away there is room: a retry makes
    // carol's, and alice's is not made again.
    std::fs::remove_file(maildir.join("new").join(&added[0])).unwrap();
    assert_eq!(queue_command(&srv.config_path, &["flush"]).code, Some(0));
    // Read the mbox once the retry is over: not while it is appended to.
    wait_for("the queue to empty", || {
        mailq(&srv.config_path)
            .stdout
            .contains("Mail queue is empty")
            .then_some(())
    });
    assert_eq!(
        mbox_messages(&mbox_seen).len(),
        2,
        "carol's copy of the half"
    );
    assert_eq!(c.mail(&[CAROL], &small(4)).unwrap().0, 250, "{}", srv.log());
    let alice = count_copies(&read_maildir(&maildir), ALICE, "alice's Maildir");
    assert_eq!(alice.into_keys().collect::<Vec<_>>(), [small(1).subject]);
    let carol = count_copies(&mbox_messages(&mbox_seen), CAROL, "carol's mbox");
    assert_eq!(
        carol.into_keys().collect::<Vec<_>>(),
        [half.subject.clone(), small(2).subject, small(4).subject]
    );
}

/// Files in a Maildir's `tmp/` older than 36 hours are leftovers of a
/// crash and go at start-up; fresh ones (a delivery in progress) and
/// anything outside `tmp/` stay.
#[test]
fn stale_maildir_tmp_files_are_cleaned_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail").join("alice").join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let old_time = SystemTime::now() - Duration::from_secs(37 * 3600);
    let age = |path: &Path| {
        std::fs::write(path, b"Subject: old\n\nx\n").unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(old_time).unwrap();
    };
    let stale = maildir.join("tmp").join("1000.M1P1Q1.old");
    let fresh = maildir.join("tmp").join("2000.M1P1Q2.fresh");
    let read_mail = maildir.join("cur").join("1000.M1P1Q3.old:2,S");
    age(&stale);
    age(&read_mail);
    std::fs::write(&fresh, b"Subject: fresh\n\nx\n").unwrap();
    let text = base_config(dir.path(), "", "", "");
    let srv = Server::start_config(dir, &text);
    assert!(!stale.exists(), "a 37-hour-old file in tmp/ is still there");
    assert!(fresh.exists(), "a fresh file in tmp/ was removed");
    assert!(read_mail.exists(), "an old message in cur/ was removed");
    assert!(
        srv.wait_log("removed 1 stale files from tmp/"),
        "{}",
        srv.log()
    );
}

/// A mail reader may hold an mbox's lock while the server starts after a
/// crash (or the dot-lock may name a live process for another reason: a
/// server that is PID 1 in its container names itself). The start-up's
/// recovery then cannot take the lock within `timeouts.mbox_lock`. The
/// interrupted append must still be undone once the lock is free, and
/// never stay in the mailbox for the next delivery to append after.
#[test]
fn an_interrupted_append_is_undone_even_if_the_mbox_is_locked_at_start() {
    const ATTEMPTS: usize = 3;
    let big = Arc::new(message(&subject("the big one", 20 * 1024 * 1024)));
    for attempt in 1..=ATTEMPTS {
        let dir = tempfile::tempdir().unwrap();
        let (text, mbox) = config_with_carol_and(dir.path(), "", "[timeouts]\nmbox_lock = 1\n");
        let m = crash_mid_append(dir, &text, &mbox, &big, &format!("attempt {attempt}"));
        let journal = m.dir.path().join("spool").join("journal");
        if m.seen.is_none() || journal_records(&journal) == 0 {
            // Not killed in the middle of an append: try again.
            continue;
        }
        // A reader (a live process: this one) holds the dot-lock while
        // the server starts, and lets go three seconds later: longer than
        // `mbox_lock`, but well before the harness gives up on a start
        // that waits for the lock instead.
        let lock = lock_path(&mbox);
        std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            std::fs::remove_file(&lock).unwrap();
        });
        let srv = Server::start_config(m.dir, &text);
        reader.join().unwrap();
        let start_log = srv.log();
        // A delivery to the mailbox, then a stop and another start.
        let after = message(&subject("after the reader", 3000));
        let mut c = Wire::connect(srv.addr).unwrap();
        let (code, _) = c.mail(&[CAROL], &after).unwrap();
        drop(c);
        let (dir, _) = srv.crash();
        let srv = Server::start_config(dir, &text);

        let now = std::fs::read(&mbox).unwrap();
        assert!(
            now.starts_with(&m.old),
            "the old content of the mbox changed"
        );
        let mut want = vec![Ok(m.first.clone())];
        if code == 250 {
            want.push(Ok(after.subject.clone()));
        }
        let found: Vec<Result<String, String>> = if now.ends_with(b"\n\n") {
            mbox_messages(&mbox)
                .iter()
                .map(|c| check_copy(c, CAROL))
                .collect()
        } else {
            vec![Err(format!("{} bytes ending inside a message", now.len()))]
        };
        let lines = |log: &str| -> Vec<String> {
            log.lines()
                .filter(|l| l.contains("interrupted append") || l.contains(RECOVERED))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            found,
            want,
            "the mbox (killed at {} bytes, {} before) after a start with the mbox locked, \
             a delivery that got {code} and another start.\nRecovery at the first start: \
             {:?}\nat the second: {:?}",
            m.seen.unwrap_or(0),
            m.old.len(),
            lines(&start_log),
            lines(&srv.log())
        );
        return;
    }
    panic!("no attempt killed the server in the middle of an append");
}
