//! Throughput benchmark: starts the release build of mailroom with a
//! temporary configuration, drives it over loopback with a multi-threaded
//! SMTP load client (one `support::Client` of the integration tests per
//! thread), checks that exactly the messages sent arrived intact in the
//! Maildir, and prints, for each workload, delivered messages/s, MB/s,
//! server CPU per message (from /proc), the server's peak and idle RSS,
//! and the latency from the final dot to its 250.
//!
//! `cargo bench --bench throughput` runs the issue's workloads a, b and c
//! with 8 workers. Arguments after `--`:
//!   `--workers N`             worker threads of the server (default 8)
//!   `--scaling`               workload b with 1, 2, 4, 8 and 16 workers
//!   `--binary [LABEL=]PATH`   another build of mailroom (a musl one, say);
//!                             more than once: builds side by side (below)
//!   `--rounds N`              all the runs N times over (default 1)
//!   `--no-wait`               start at once even if a run here deleted its
//!                             mail less than six minutes ago (see below)
//!   `NAME:SESSIONS:MESSAGES:SIZE[:reuse][:pipe][:milter|:milter-eom]`  a
//! workload of your own (`reuse`: one connection per session; `pipe`:
//! MAIL, RCPT and DATA in one write; `milter`: every message passes a
//! pass-through milter, `common::noop_milter`, on loopback, that answers
//! every stage; `milter-eom`: one that asks for the end of the message
//! only, as libmilter asks for a filter without other callbacks; a run
//! with it beside one without shows what the milter protocol costs
//! mailroom per message and adds to its latency).
//!
//! With several binaries each workload (with `--scaling`, each worker
//! count) runs on every binary in turn, in the order given, before the
//! next workload starts, and each row begins with the binary's label
//! (LABEL, or else the file name): an old build and a new one are
//! measured side by side, at the same speed of this VM, which drifts over
//! a day. `--rounds N` runs that whole interleaved set N times, round
//! after round, the order of the binaries reversed every other round (a
//! run slows down the one right after it: the disk still writes back
//! its mail).
//!
//! The mail is written under target/tmp, a disk, so fsync costs
//! what it costs. Each run gets a fresh directory and nothing is deleted
//! until all have run: on ext4 without a journal, new inodes are slow to
//! allocate for a minute after many files were deleted (six while their
//! blocks are dirty), which would make every run pay for the one before.
//! For the same reason a benchmark started within six minutes of the
//! previous one's clean-up first waits out the rest of those minutes.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{find, lf, message, noop_milter, smtp_open, smtp_quit, smtp_send, Daemon};
use support::{Client, BIN};

#[derive(Clone)]
struct Workload {
    name: String,
    sessions: usize,
    messages: usize,
    size: usize,
    reuse: bool,
    pipelining: bool,
    /// The protocol steps of the pass-through milter it passes, if any.
    milter: Option<u32>,
}

impl Workload {
    fn parse(spec: &str) -> Option<Workload> {
        let mut parts = spec.split(':');
        let mut w = Workload {
            name: parts.next()?.to_string(),
            sessions: parts.next()?.parse().ok()?,
            messages: parts.next()?.parse().ok()?,
            size: parts.next()?.parse().ok()?,
            reuse: false,
            pipelining: false,
            milter: None,
        };
        for opt in parts {
            match opt {
                "reuse" => w.reuse = true,
                "pipe" => w.pipelining = true,
                "milter" => w.milter = Some(0),
                "milter-eom" => w.milter = Some(common::EOM_ONLY),
                _ => return None,
            }
        }
        (w.sessions > 0 && w.messages > 0).then_some(w)
    }
}

/// The issue's workloads, as Postfix's smtp-source runs them: a new
/// connection per message, no pipelining.
const DEFAULT: &[&str] = &["a:1:2000:1024", "b:20:20000:4096", "c:4:40:10485760"];

/// Where a run's mail is to be delivered: `benchuser`'s Maildir.
const RCPT: &str = "benchuser@localhost";

/// Starts mailroom in `dir` with `workers` workers, delivering
/// `benchuser`'s mail to `dir/mail/benchuser/Maildir`, through the milter
/// on `milter` if there is one.
fn start(bin: &Path, dir: &Path, workers: usize, milter: Option<String>) -> Daemon {
    let d = dir.display();
    let milters = milter.map_or(String::new(), |address| {
        format!("milters = [\"{address}\"]")
    });
    let config = format!(
        r#"hostname = "bench.example"
{milters}
local_domains = ["localhost"]
spool_dir = "{d}/spool"
[server]
listen = ["127.0.0.1:0"]
workers = {workers}
handoff_queue = 1024
max_connections_per_ip = 1000
max_message_size = 52428800
[mailbox.benchuser]
maildir = "{d}/mail/benchuser/Maildir"
[mailbox.postmaster]
maildir = "{d}/mail/postmaster/Maildir"
"#
    );
    Daemon::start(bin, dir, &config)
}

/// Resident set now and at its peak, in KiB.
fn rss_kib(srv: &Daemon) -> (u64, u64) {
    (
        common::proc::status_kib(srv.pid(), "VmRSS:"),
        common::proc::status_kib(srv.pid(), "VmHWM:"),
    )
}

fn maildir(srv: &Daemon) -> PathBuf {
    srv.dir.join("mail/benchuser/Maildir/new")
}

struct Outcome {
    wall: Duration,
    cpu: Duration,
    latencies: Vec<Duration>,
    idle_rss: u64,
    peak_rss: u64,
}

fn run(bin: &Path, w: &Workload, workers: usize, base: &Path, n: usize) -> Outcome {
    let milter = w.milter.map(|steps| noop_milter(steps, None));
    let srv = start(
        bin,
        &base.join(format!("{n}-{}-{workers}", w.name)),
        workers,
        milter,
    );
    std::thread::sleep(Duration::from_millis(200));
    let (idle_rss, _) = rss_kib(&srv);
    // Messages are made before the clock starts: the client's own work
    // should not slow the server it measures.
    let messages: Arc<Vec<Vec<u8>>> = Arc::new(if w.size >= 1 << 20 {
        // Large ones share a body; each differs in its first line.
        (0..w.messages.min(w.sessions * 2))
            .map(|n| message(n, w.size, RCPT))
            .collect()
    } else {
        (0..w.messages).map(|n| message(n, w.size, RCPT)).collect()
    });
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = common::proc::cpu(srv.pid());
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..w.sessions)
        .map(|_| {
            let (w, messages, next, addr) = (w.clone(), messages.clone(), next.clone(), srv.addr);
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut session: Option<Client> = None;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= w.messages {
                        break;
                    }
                    let c = session.get_or_insert_with(|| smtp_open(addr));
                    lat.push(smtp_send(
                        c,
                        RCPT,
                        &messages[n % messages.len()],
                        w.pipelining,
                    ));
                    if !w.reuse {
                        smtp_quit(session.take().unwrap());
                    }
                }
                if let Some(c) = session {
                    smtp_quit(c);
                }
                lat
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let wall = started.elapsed();
    let cpu = common::proc::cpu(srv.pid()) - cpu0;
    let (_, peak_rss) = rss_kib(&srv);
    verify(&srv, w, &messages);
    latencies.sort();
    Outcome {
        wall,
        cpu,
        latencies,
        idle_rss,
        peak_rss,
    }
}

/// Every message arrived once, intact: the file ends with exactly what was
/// sent (LF line ends), after the three fields delivery adds.
fn verify(srv: &Daemon, w: &Workload, messages: &[Vec<u8>]) {
    let mut seen = vec![0u32; messages.len()];
    let mut count = 0;
    for entry in std::fs::read_dir(maildir(srv)).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let at = find(&data, b"\nSubject: bench ").expect("a bench message");
        let n: usize = std::str::from_utf8(&data[at + 16..at + 16 + 12])
            .unwrap()
            .split('\n')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let sent = lf(&messages[n % messages.len()]);
        let start = find(&data, b"\nFrom: <load@client.example>").expect("the sent header") + 1;
        assert!(data[start..] == sent[..], "message {n} arrived changed");
        seen[n % messages.len()] += 1;
        count += 1;
    }
    assert_eq!(
        count, w.messages,
        "{}: delivered {count} of {}",
        w.name, w.messages
    );
    if messages.len() == w.messages {
        assert!(
            seen.iter().all(|&c| c == 1),
            "{}: a message missing or twice",
            w.name
        );
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A build to measure: its label in the output, and its absolute path
/// (the server runs in a directory of its own).
struct Binary {
    label: String,
    path: PathBuf,
}

impl Binary {
    /// `PATH` or `LABEL=PATH` (a label has no `/`); without a label, the
    /// file name is the label.
    fn parse(arg: &str) -> Binary {
        let (label, path) = match arg.split_once('=') {
            Some((label, path)) if !label.is_empty() && !label.contains('/') => {
                (label.to_string(), path)
            }
            _ => {
                let name = Path::new(arg).file_name().unwrap_or(arg.as_ref());
                (name.to_string_lossy().into_owned(), arg)
            }
        };
        let path = std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Binary { label, path }
    }
}

/// Two binaries with the same label (two `mailroom`s from different
/// target directories, say) get their place in the list after it.
fn unique_labels(bins: &mut [Binary]) {
    let labels: Vec<String> = bins.iter().map(|b| b.label.clone()).collect();
    for (i, b) in bins.iter_mut().enumerate() {
        if labels.iter().filter(|&l| *l == b.label).count() > 1 {
            b.label = format!("{}#{}", b.label, i + 1);
        }
    }
}

/// `label`: the width of the leading binary column, or `None` for none.
fn print_header(label: Option<usize>) {
    if let Some(width) = label {
        print!("{:<width$} ", "binary");
    }
    println!(
        "{:<10} {:>7} {:>8} {:>9} {:>10} {:>8} {:>10} {:>9} {:>8} {:>8} {:>8}",
        "workload",
        "workers",
        "sessions",
        "messages",
        "msgs/s",
        "MB/s",
        "cpu ms/msg",
        "peak RSS",
        "idle RSS",
        "p50 ms",
        "p99 ms"
    );
}

/// `label`: the binary's label and the column's width, when there is one.
fn print_row(label: Option<(&str, usize)>, w: &Workload, workers: usize, o: &Outcome) {
    if let Some((label, width)) = label {
        print!("{label:<width$} ");
    }
    let secs = o.wall.as_secs_f64();
    let mut name = w.name.clone();
    if w.reuse {
        name.push_str("+reuse");
    }
    if w.pipelining {
        name.push_str("+pipe");
    }
    match w.milter {
        Some(0) => name.push_str("+milter"),
        Some(_) => name.push_str("+eom"),
        None => {}
    }
    println!(
        "{:<10} {:>7} {:>8} {:>9} {:>10.0} {:>8.1} {:>10.3} {:>6.1} MiB {:>4.1} MiB {:>8.2} {:>8.2}",
        name,
        workers,
        w.sessions,
        w.messages,
        w.messages as f64 / secs,
        (w.messages * w.size) as f64 / secs / 1e6,
        o.cpu.as_secs_f64() * 1000.0 / w.messages as f64,
        o.peak_rss as f64 / 1024.0,
        o.idle_rss as f64 / 1024.0,
        pct(&o.latencies, 0.50),
        pct(&o.latencies, 0.99),
    );
}

fn main() {
    let mut workers = 8;
    let mut specs: Vec<String> = Vec::new();
    let mut scaling = false;
    let mut wait = true;
    let mut rounds = 1;
    let mut bins: Vec<Binary> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workers" => {
                workers = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--workers N")
            }
            "--scaling" => scaling = true,
            "--no-wait" => wait = false,
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .expect("--rounds N (at least 1)")
            }
            "--binary" => bins.push(Binary::parse(
                &args.next().expect("--binary PATH or --binary LABEL=PATH"),
            )),
            // What cargo bench passes to every bench.
            "--bench" => {}
            s if s.contains(':') => specs.push(s.to_string()),
            other => panic!("unknown argument {other}"),
        }
    }
    if bins.is_empty() {
        bins.push(Binary::parse(BIN));
    }
    unique_labels(&mut bins);
    // The label column only when there is more than one binary to tell
    // apart.
    let width =
        (bins.len() > 1).then(|| bins.iter().map(|b| b.label.len()).max().unwrap_or(0).max(6));
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("throughput");
    let stamp = base.with_extension("deleted");
    if wait {
        settle_after_deletion(&stamp);
    }
    print_header(width);
    let mut runs: Vec<(Workload, usize)> = Vec::new();
    if scaling {
        let b = Workload::parse(DEFAULT[1]).unwrap();
        runs.extend([1, 2, 4, 8, 16].map(|n| (b.clone(), n)));
    } else if specs.is_empty() {
        runs.extend(
            DEFAULT
                .iter()
                .map(|s| (Workload::parse(s).unwrap(), workers)),
        );
    } else {
        for s in &specs {
            let w = Workload::parse(s).unwrap_or_else(|| panic!("bad workload {s}"));
            runs.push((w, workers));
        }
    }
    // Interleaved: every binary runs a workload before the next one
    // starts, in the order given in odd rounds and the other way round in
    // even ones: a run leaves work for the disk (written-back mail) that
    // slows down the run after it, which must not fall on one binary.
    let mut i = 0;
    for round in 0..rounds {
        for (w, workers) in &runs {
            let mut order: Vec<&Binary> = bins.iter().collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for b in order {
                let o = run(&b.path, w, *workers, &base, i);
                i += 1;
                print_row(width.map(|n| (b.label.as_str(), n)), w, *workers, &o);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    let _ = std::fs::write(&stamp, b"");
}

/// How long after a mass deletion new files stay slow to create: ext4
/// without a journal skips inodes freed less than 60 s ago, 360 s while
/// their inode table block is dirty (`recently_deleted` in ialloc.c).
const SETTLE: Duration = Duration::from_secs(360);

/// Waits until `SETTLE` has passed since the clean-up `stamp` records.
fn settle_after_deletion(stamp: &Path) {
    let Some(age) = std::fs::metadata(stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
    else {
        return;
    };
    if let Some(rest) = SETTLE.checked_sub(age) {
        eprintln!(
            "the previous run's mail was deleted {} s ago; waiting {} s more so that \
             this run does not pay for it (--no-wait to skip)",
            age.as_secs(),
            rest.as_secs()
        );
        std::thread::sleep(rest);
    }
}
