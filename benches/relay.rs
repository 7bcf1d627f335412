//! Relay benchmark: mail for a remote recipient, handed to the MTA over
//! SMTP or through its sendmail command, relayed to a loopback smarthost,
//! Postfix's `smtp-sink`. Each run starts a fresh sink and a fresh MTA
//! relaying to it, injects N messages from several clients at once, and
//! measures from the first injection until the sink has received all N,
//! then checks that it received exactly N and that the MTA's queue is
//! empty. It prints messages/s, the MTA's CPU per message (its whole
//! process tree from /proc, reaped children included), the sendmail
//! command's own CPU per message, the tree's peak RSS and PSS, and how
//! much CPU the kernel and other users of the machine took meanwhile.
//!
//! The MTAs are a release build of mailroom and a private Postfix
//! (`benches/relay-postfix.sh`, Postfix's defaults for concurrency and
//! connection reuse), both relaying to `[relay]`/`relayhost` =
//! 127.0.0.1:SINK in the clear. Over SMTP mailroom takes mail for other
//! hosts only through a local alias, so its clients write to
//! `far@localhost` (aliases: `far: someone@remote.example`); Postfix
//! relays for 127.0.0.0/8 and is sent `someone@remote.example` directly.
//! Through sendmail both get `sendmail -i -f load@client.example
//! someone@remote.example` with the message on standard input.
//!
//! `cargo bench --bench relay` runs the two default workloads (SMTP: 8
//! sessions, a new connection per message; sendmail: 4 commands at a
//! time; 2000 messages of 4 KiB each) on mailroom and Postfix, three
//! rounds, alternating the MTAs and swapping their order every round so
//! that the machine's changing speed and other load fall on both alike.
//! Each run starts 65 s after the one before ended, with its deletions
//! written back: on ext4 without a journal a run's deleted queue files
//! would otherwise slow down the file creation of the next one (see
//! [`common::settle`]), and so whichever MTA ran second.
//! Arguments after `--`:
//!   `--rounds N`              rounds (default 3)
//!   `--binary [LABEL=]PATH`   the mailroom build to measure (more than
//!                             once: several, side by side)
//!   `--no-postfix`            mailroom only
//!   `--no-wait`               no pause between runs
//!   `--timeout SECS`          the most one run may take (default 300)
//!   `NAME:smtp|sendmail:PARALLEL:MESSAGES:SIZE[:reuse]`  a workload of
//!                             your own (`reuse`: one SMTP connection per
//!                             session)
//!
//! Needs root (smtp-sink drops to `nobody`; Postfix) and Debian's
//! `postfix` package for `smtp-sink` and Postfix itself (see
//! `benches/relay-postfix.sh` for installing it without starting the
//! system's instance). Without `smtp-sink` the benchmark says so and
//! does nothing. Everything listens on 127.0.0.1 only; every wait is
//! bounded.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{lf, message, proc, smtp_open, smtp_quit, smtp_send, Daemon};
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The remote recipient, and the local alias that leads mailroom's SMTP
/// clients to it.
const RECIPIENT: &str = "someone@remote.example";
const ALIAS: &str = "far@localhost";
const SENDER: &str = "load@client.example";
const POSTFIX_SENDMAIL: &str = "/usr/sbin/sendmail";
const POSTFIX_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/relay-postfix.sh");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Smtp,
    Sendmail,
}

#[derive(Clone)]
struct Workload {
    name: String,
    via: Via,
    /// SMTP sessions, or sendmail commands running at once.
    parallel: usize,
    messages: usize,
    size: usize,
    reuse: bool,
}

impl Workload {
    fn parse(spec: &str) -> Option<Workload> {
        let mut parts = spec.split(':');
        let mut w = Workload {
            name: parts.next()?.to_string(),
            via: match parts.next()? {
                "smtp" => Via::Smtp,
                "sendmail" => Via::Sendmail,
                _ => return None,
            },
            parallel: parts.next()?.parse().ok()?,
            messages: parts.next()?.parse().ok()?,
            size: parts.next()?.parse().ok()?,
            reuse: false,
        };
        for opt in parts {
            match opt {
                "reuse" if w.via == Via::Smtp => w.reuse = true,
                _ => return None,
            }
        }
        (w.parallel > 0 && w.messages > 0).then_some(w)
    }
}

const DEFAULT: &[&str] = &["smtp:smtp:8:2000:4096", "sendmail:sendmail:4:2000:4096"];

/// An MTA to measure.
#[derive(Clone)]
enum Target {
    Mailroom { label: String, bin: PathBuf },
    Postfix,
}

impl Target {
    fn label(&self) -> &str {
        match self {
            Target::Mailroom { label, .. } => label,
            Target::Postfix => "postfix",
        }
    }

    /// `PATH` or `LABEL=PATH`; without a label, "mailroom".
    fn mailroom(arg: &str) -> Target {
        let (label, path) = match arg.split_once('=') {
            Some((l, p)) if !l.is_empty() && !l.contains('/') => (l.to_string(), p),
            _ => ("mailroom".to_string(), arg),
        };
        let bin = std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Target::Mailroom { label, bin }
    }
}

/// A free port on 127.0.0.1 (free a moment ago: whoever binds it next is
/// started right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// True when `name` is an executable file on PATH.
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

// ---------------------------------------------------------------------
// The sink
// ---------------------------------------------------------------------

/// `smtp-sink -c` on 127.0.0.1: it discards every message and prints its
/// running counters (`sess=.. quit=.. mesg=N`) after every message. It
/// buffers them unless they go to a terminal, so its standard output is
/// a pseudo-terminal read here, and the moment the count reaches the
/// expected number is noted as it comes.
struct Sink {
    child: Child,
    port: u16,
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    count: AtomicUsize,
    /// The number waited for, and when the count reached it.
    target: AtomicUsize,
    reached: Mutex<Option<Instant>>,
}

/// A pseudo-terminal: its master end, and the slave end for a child's
/// output; neither is inherited by other children.
fn pty() -> (File, OwnedFd) {
    let pair = nix::pty::openpty(None, None).expect("openpty");
    let (master, slave) = (File::from(pair.master), pair.slave);
    for fd in [&master as &dyn std::os::fd::AsFd, &slave] {
        nix::fcntl::fcntl(
            fd.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .expect("FD_CLOEXEC");
    }
    (master, slave)
}

impl Sink {
    fn start() -> Sink {
        let port = free_port();
        let (mut master, slave) = pty();
        let child = Command::new("smtp-sink")
            // -u: it refuses to run as root; -c: the counters.
            .args(["-u", "nobody", "-c", &format!("127.0.0.1:{port}"), "1024"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(slave))
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        let seen = Arc::new(Seen::default());
        {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut line = Vec::new();
                // Ends when the sink has gone (EIO on the master).
                while let Ok(n) = master.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    for &b in &buf[..n] {
                        if b != b'\r' && b != b'\n' {
                            line.push(b);
                            continue;
                        }
                        if let Some(count) = mesg(&line) {
                            seen.count.store(count, Ordering::SeqCst);
                            let target = seen.target.load(Ordering::SeqCst);
                            if target > 0 && count >= target {
                                let mut r = seen.reached.lock().unwrap();
                                r.get_or_insert_with(Instant::now);
                            }
                        }
                        line.clear();
                    }
                }
            });
        }
        let sink = Sink { child, port, seen };
        // Ready when it answers; that session counts, no message does.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut greeting = [0u8; 3];
                if s.read_exact(&mut greeting).is_ok() && &greeting == b"220" {
                    let _ = s.write_all(b"QUIT\r\n");
                    break;
                }
            }
            assert!(Instant::now() < deadline, "smtp-sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn count(&self) -> usize {
        self.seen.count.load(Ordering::SeqCst)
    }

    /// Waits for `n` messages from now on.
    fn expect(&self, n: usize) {
        *self.seen.reached.lock().unwrap() = None;
        self.seen.target.store(n, Ordering::SeqCst);
    }

    /// When the count reached the number expected, if it has.
    fn reached(&self) -> Option<Instant> {
        *self.seen.reached.lock().unwrap()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The message count in one line of smtp-sink's counters.
fn mesg(line: &[u8]) -> Option<usize> {
    let line = std::str::from_utf8(line).ok()?;
    let at = line.find("mesg=")?;
    line[at + 5..].trim().parse().ok()
}

// ---------------------------------------------------------------------
// The MTAs
// ---------------------------------------------------------------------

/// A private Postfix, stopped (by its master's PID, see the script) when
/// the handle drops.
struct Postfix {
    dir: PathBuf,
    pid: u32,
    addr: SocketAddr,
}

impl Postfix {
    fn start(dir: &Path, relay_port: u16) -> Postfix {
        let port = free_port();
        let out = Command::new("bash")
            .arg(POSTFIX_SCRIPT)
            .arg("start")
            .arg(dir)
            .arg(port.to_string())
            .arg(relay_port.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run relay-postfix.sh");
        let pid = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
        let Some(pid) = pid.filter(|_| out.status.success()) else {
            let _ = Command::new("bash")
                .arg(POSTFIX_SCRIPT)
                .arg("stop")
                .arg(dir)
                .status();
            panic!(
                "Postfix did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        Postfix {
            dir: dir.to_path_buf(),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(POSTFIX_SCRIPT)
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .status();
    }
}

enum Mta {
    /// The daemon, and its binary (which is its sendmail command too).
    Mailroom(Daemon, PathBuf),
    Postfix(Postfix),
}

impl Mta {
    fn start(target: &Target, dir: &Path, relay_port: u16) -> Mta {
        std::fs::create_dir_all(dir).unwrap();
        match target {
            Target::Mailroom { bin, .. } => {
                let d = dir.display();
                std::fs::write(dir.join("aliases"), format!("far: {RECIPIENT}\n")).unwrap();
                let config = format!(
                    r#"hostname = "bench.example"
local_domains = ["localhost"]
spool_dir = "{d}/spool"
queue_dir = "{d}/queue"
aliases = "{d}/aliases"
[server]
listen = ["127.0.0.1:0"]
workers = 8
handoff_queue = 1024
max_connections_per_ip = 1000
[mailbox.postmaster]
maildir = "{d}/mail/postmaster/Maildir"
[relay]
host = "127.0.0.1"
port = {relay_port}
tls = "none"
"#
                );
                Mta::Mailroom(Daemon::start(bin, dir, &config), bin.clone())
            }
            Target::Postfix => Mta::Postfix(Postfix::start(dir, relay_port)),
        }
    }

    /// The root of its process tree.
    fn pid(&self) -> u32 {
        match self {
            Mta::Mailroom(d, _) => d.pid(),
            Mta::Postfix(p) => p.pid,
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Mta::Mailroom(d, _) => d.addr,
            Mta::Postfix(p) => p.addr,
        }
    }

    /// Whom its SMTP clients write to.
    fn rcpt(&self) -> &'static str {
        match self {
            Mta::Mailroom(..) => ALIAS,
            Mta::Postfix(_) => RECIPIENT,
        }
    }

    /// Its sendmail command, ready for a message on standard input.
    fn sendmail(&self) -> Command {
        let mut cmd = match self {
            Mta::Mailroom(d, bin) => {
                let mut c = Command::new(bin);
                c.arg("sendmail").arg("-C").arg(&d.config);
                c
            }
            Mta::Postfix(p) => {
                let mut c = Command::new(POSTFIX_SENDMAIL);
                c.arg("-C").arg(p.dir.join("etc"));
                c
            }
        };
        cmd.args(["-i", "-f", SENDER, RECIPIENT]).current_dir("/");
        cmd
    }

    /// Messages in its queue, whatever their state.
    fn queued(&self) -> usize {
        let (root, subs): (PathBuf, &[&str]) = match self {
            Mta::Mailroom(d, _) => (
                d.dir.join("queue"),
                &["maildrop", "tmp", "active", "hold", "corrupt"],
            ),
            Mta::Postfix(p) => (
                p.dir.join("spool"),
                &["maildrop", "incoming", "active", "deferred", "hold"],
            ),
        };
        subs.iter().map(|s| files_under(&root.join(s))).sum()
    }

    /// What it logged last, for a run that went wrong.
    fn log_tail(&self) -> String {
        match self {
            Mta::Mailroom(d, _) => d.log_tail(),
            Mta::Postfix(p) => {
                let log = std::fs::read_to_string(p.dir.join("postfix.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            }
        }
    }
}

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------
// A run
// ---------------------------------------------------------------------

/// CPU counters at one moment.
struct Snapshot {
    mta: Duration,
    sink: Duration,
    own: Duration,
    children: Duration,
    busy: Duration,
    kernel: Duration,
}

impl Snapshot {
    fn take(mta: u32, sink: u32) -> Snapshot {
        let (own, children) = proc::own_cpu();
        let (busy, kernel) = proc::machine();
        Snapshot {
            mta: proc::tree_cpu(mta),
            sink: proc::cpu(sink),
            own,
            children,
            busy,
            kernel,
        }
    }
}

struct Outcome {
    /// From the first injection until the sink had them all.
    wall: Duration,
    /// From the first injection until the last was accepted.
    accepted: Duration,
    /// The MTA's process tree.
    cpu: Duration,
    /// The sendmail commands (and what they ran).
    commands: Duration,
    idle: (u64, u64),
    peak: (u64, u64),
    kernel: f64,
    foreign: f64,
    error: Option<String>,
}

/// A client thread's end: when it was done, or its first failure.
type Injector = std::thread::JoinHandle<Result<Instant, String>>;

/// Starts the workload's clients. `stop` ends them early; `running` holds
/// the PIDs of the sendmail commands running (not yet reaped).
fn inject(
    mta: &Mta,
    w: &Workload,
    messages: &Arc<Vec<Vec<u8>>>,
    stop: &Arc<AtomicBool>,
    running: &Arc<Mutex<HashSet<u32>>>,
) -> Vec<Injector> {
    let next = Arc::new(AtomicUsize::new(0));
    (0..w.parallel)
        .map(|_| {
            let (w, messages, next, stop) =
                (w.clone(), messages.clone(), next.clone(), stop.clone());
            match w.via {
                Via::Smtp => {
                    let (addr, rcpt) = (mta.addr(), mta.rcpt());
                    std::thread::spawn(move || {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let mut session = None;
                            while !stop.load(Ordering::Relaxed) {
                                let n = next.fetch_add(1, Ordering::Relaxed);
                                if n >= w.messages {
                                    break;
                                }
                                let c = session.get_or_insert_with(|| smtp_open(addr));
                                smtp_send(c, rcpt, &messages[n], false);
                                if !w.reuse {
                                    smtp_quit(session.take().unwrap());
                                }
                            }
                            if let Some(c) = session {
                                smtp_quit(c);
                            }
                            Instant::now()
                        }));
                        r.map_err(|e| {
                            e.downcast_ref::<String>()
                                .cloned()
                                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "an SMTP client failed".into())
                        })
                    })
                }
                Via::Sendmail => {
                    let mut cmd = mta.sendmail();
                    cmd.stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped());
                    let running = running.clone();
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= w.messages {
                                break;
                            }
                            sendmail(&mut cmd, &messages[n], &running)?;
                        }
                        Ok(Instant::now())
                    })
                }
            }
        })
        .collect()
}

/// Runs one sendmail command with `message` on its standard input. While
/// it runs its PID is in `running`, where a run that times out finds it
/// to kill it; it leaves the set before it is reaped, so that PID is
/// never another process's.
fn sendmail(
    cmd: &mut Command,
    message: &[u8],
    running: &Mutex<HashSet<u32>>,
) -> Result<(), String> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let mut child = cmd.spawn().map_err(|e| format!("sendmail: {e}"))?;
    let pid = child.id();
    running.lock().unwrap().insert(pid);
    let wrote = child.stdin.take().unwrap().write_all(message);
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    // Exited, and not reaped yet.
    let _ = waitid(
        Id::Pid(nix::unistd::Pid::from_raw(pid as i32)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    );
    running.lock().unwrap().remove(&pid);
    let status = child.wait().map_err(|e| format!("sendmail: {e}"))?;
    if !status.success() || wrote.is_err() {
        return Err(format!("sendmail: {status}: {}", err.trim()));
    }
    Ok(())
}

fn run(target: &Target, w: &Workload, dir: &Path, timeout: Duration) -> Outcome {
    let sink = Sink::start();
    let mta = Mta::start(target, dir, sink.port);
    // Postfix starts its daemons as they are first needed; both have a
    // moment to settle.
    std::thread::sleep(Duration::from_millis(500));
    let idle = proc::tree_mem(mta.pid());
    let messages: Vec<Vec<u8>> = (0..w.messages)
        .map(|n| {
            let m = message(n, w.size, RECIPIENT);
            match w.via {
                Via::Smtp => m,
                Via::Sendmail => lf(&m),
            }
        })
        .collect();
    let messages = Arc::new(messages);
    let stop = Arc::new(AtomicBool::new(false));
    let running = Arc::new(Mutex::new(HashSet::new()));
    sink.expect(w.messages);
    let before = Snapshot::take(mta.pid(), sink.pid());
    let started = Instant::now();
    let deadline = started + timeout;
    let mut workers = inject(&mta, w, &messages, &stop, &running);
    let mut peak = idle;
    let mut last_sample = Instant::now() - Duration::from_secs(1);
    let mut accepted = None;
    let mut error = None;
    let reached = loop {
        if let Some(t) = sink.reached() {
            break Some(t);
        }
        let now = Instant::now();
        if now > deadline {
            error = Some(format!(
                "timed out: the sink had {} of {} after {} s",
                sink.count(),
                w.messages,
                timeout.as_secs()
            ));
            break None;
        }
        if now - last_sample >= Duration::from_millis(100) {
            let (rss, pss) = proc::tree_mem(mta.pid());
            peak = (peak.0.max(rss), peak.1.max(pss));
            last_sample = now;
        }
        if workers.iter().any(|t| t.is_finished()) {
            let (done, busy): (Vec<Injector>, Vec<Injector>) =
                workers.drain(..).partition(|t| t.is_finished());
            workers = busy;
            for t in done {
                match t.join().unwrap_or(Err("a client panicked".into())) {
                    Ok(at) => accepted = accepted.max(Some(at)),
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            if error.is_some() {
                break None;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A run that failed or timed out: the clients stop, and any sendmail
    // still running is ended (our children, by PID).
    stop.store(true, Ordering::Relaxed);
    if reached.is_none() {
        for &pid in running.lock().unwrap().iter() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    for t in workers {
        match t.join().unwrap_or(Err("a client panicked".into())) {
            Ok(at) => accepted = accepted.max(Some(at)),
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    let accepted = accepted.unwrap_or_else(Instant::now) - started;
    // Done when the queue is empty too (the last file removed).
    let empty_by = Instant::now() + Duration::from_secs(30);
    while reached.is_some() && mta.queued() > 0 && Instant::now() < empty_by {
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = Snapshot::take(mta.pid(), sink.pid());
    let (rss, pss) = proc::tree_mem(mta.pid());
    peak = (peak.0.max(rss), peak.1.max(pss));
    if error.is_none() {
        let left = mta.queued();
        if left > 0 {
            error = Some(format!(
                "{left} messages still queued 30 s after the last was relayed"
            ));
        }
    }
    // Exactly N: nothing relayed twice, no notice relayed on top.
    std::thread::sleep(Duration::from_millis(500));
    if error.is_none() && sink.count() != w.messages {
        error = Some(format!(
            "the sink received {} messages, not {}",
            sink.count(),
            w.messages
        ));
    }
    if let Some(e) = &error {
        eprintln!(
            "{} {}: {e}\n--- its log, last lines:\n{}",
            target.label(),
            w.name,
            mta.log_tail()
        );
    }
    let wall = reached.map_or(started.elapsed(), |t| t - started);
    let secs = |d: Duration| d.as_secs_f64();
    let total = secs(after.busy.saturating_sub(before.busy));
    let mta_cpu = after.mta.saturating_sub(before.mta);
    let sink_cpu = after.sink.saturating_sub(before.sink);
    let own = after.own.saturating_sub(before.own);
    let commands = after.children.saturating_sub(before.children);
    let kernel = secs(after.kernel.saturating_sub(before.kernel));
    let foreign = total - secs(mta_cpu) - secs(sink_cpu) - secs(own) - secs(commands) - kernel;
    drop(mta);
    drop(sink);
    Outcome {
        wall,
        accepted,
        cpu: mta_cpu,
        commands,
        idle,
        peak,
        kernel,
        foreign,
        error,
    }
}

// ---------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------

fn print_header(width: usize) {
    println!(
        "{:<5} {:<width$} {:<9} {:<8} {:>3} {:>5} {:>5} {:>7} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7}  status",
        "round",
        "mta",
        "workload",
        "via",
        "par",
        "msgs",
        "size",
        "wall s",
        "msgs/s",
        "accept/s",
        "cpu ms",
        "cmd ms",
        "peak RSS",
        "peak PSS",
        "idle RSS",
        "kern s",
        "frgn s",
    );
}

fn print_row(round: usize, label: &str, width: usize, w: &Workload, o: &Outcome) {
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / w.messages as f64;
    let mib = |k: u64| format!("{:.1}M", k as f64 / 1024.0);
    let via = match (w.via, w.reuse) {
        (Via::Smtp, false) => "smtp",
        (Via::Smtp, true) => "smtp+re",
        (Via::Sendmail, _) => "sendmail",
    };
    println!(
        "{:<5} {:<width$} {:<9} {:<8} {:>3} {:>5} {:>5} {:>7.2} {:>7.0} {:>8.0} {:>7.3} {:>7} {:>8} {:>8} {:>8} {:>7.2} {:>7.2}  {}",
        round,
        label,
        w.name,
        via,
        w.parallel,
        w.messages,
        w.size,
        o.wall.as_secs_f64(),
        w.messages as f64 / o.wall.as_secs_f64(),
        w.messages as f64 / o.accepted.as_secs_f64(),
        per(o.cpu),
        match w.via {
            Via::Sendmail => format!("{:.3}", per(o.commands)),
            Via::Smtp => "-".into(),
        },
        mib(o.peak.0),
        mib(o.peak.1),
        mib(o.idle.0),
        o.kernel,
        o.foreign,
        o.error.as_deref().map_or("OK".into(), |e| format!("FAILED: {e}")),
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Medians over the rounds, and each mailroom's rate against Postfix's
/// in the same round.
fn print_summary(
    workloads: &[Workload],
    targets: &[Target],
    results: &[(usize, usize, usize, Outcome)],
) {
    println!();
    println!("medians over the rounds (failed runs left out):");
    println!(
        "{:<9} {:<10} {:>5} {:>8} {:>10} {:>10} {:>9} {:>9}  vs postfix, per round",
        "workload", "mta", "ok", "msgs/s", "cpu ms/msg", "cmd ms/msg", "peak RSS", "peak PSS"
    );
    for (wi, w) in workloads.iter().enumerate() {
        for (ti, t) in targets.iter().enumerate() {
            let mine: Vec<&(usize, usize, usize, Outcome)> =
                results.iter().filter(|r| r.1 == wi && r.2 == ti).collect();
            let ok: Vec<&Outcome> = mine
                .iter()
                .map(|r| &r.3)
                .filter(|o| o.error.is_none())
                .collect();
            let n = w.messages as f64;
            let rate = median(ok.iter().map(|o| n / o.wall.as_secs_f64()).collect());
            let cpu = median(ok.iter().map(|o| o.cpu.as_secs_f64() * 1e3 / n).collect());
            let cmd = median(
                ok.iter()
                    .map(|o| o.commands.as_secs_f64() * 1e3 / n)
                    .collect(),
            );
            let rss = ok.iter().map(|o| o.peak.0).max().unwrap_or(0) as f64 / 1024.0;
            let pss = ok.iter().map(|o| o.peak.1).max().unwrap_or(0) as f64 / 1024.0;
            // This target's rate over Postfix's, round by round.
            let postfix = targets.iter().position(|t| matches!(t, Target::Postfix));
            let ratios: Vec<String> = match (t, postfix) {
                (Target::Mailroom { .. }, Some(pi)) => mine
                    .iter()
                    .filter_map(|r| {
                        let p = results
                            .iter()
                            .find(|q| q.0 == r.0 && q.1 == wi && q.2 == pi)?;
                        if r.3.error.is_some() || p.3.error.is_some() {
                            return Some("failed".into());
                        }
                        Some(format!(
                            "{:.2}x",
                            p.3.wall.as_secs_f64() / r.3.wall.as_secs_f64()
                        ))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            println!(
                "{:<9} {:<10} {:>5} {:>8.0} {:>10.3} {:>10} {:>8.1}M {:>8.1}M  {}",
                w.name,
                t.label(),
                format!("{}/{}", ok.len(), mine.len()),
                rate,
                cpu,
                if w.via == Via::Sendmail {
                    format!("{cmd:.3}")
                } else {
                    "-".into()
                },
                rss,
                pss,
                ratios.join(" "),
            );
        }
    }
}

fn main() {
    let mut rounds = 3;
    let mut specs: Vec<String> = Vec::new();
    let mut bins: Vec<Target> = Vec::new();
    let mut postfix = true;
    let mut wait = true;
    let mut timeout = Duration::from_secs(300);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n: &usize| n > 0)
                    .expect("--rounds N (at least 1)")
            }
            "--binary" => bins.push(Target::mailroom(
                &args.next().expect("--binary PATH or --binary LABEL=PATH"),
            )),
            "--no-postfix" => postfix = false,
            "--no-wait" => wait = false,
            "--timeout" => {
                timeout = Duration::from_secs(
                    args.next()
                        .and_then(|n| n.parse().ok())
                        .expect("--timeout SECS"),
                )
            }
            // What cargo bench passes to every bench.
            "--bench" => {}
            s if s.contains(':') => specs.push(s.to_string()),
            other => panic!("unknown argument {other}"),
        }
    }
    if !on_path("smtp-sink") {
        eprintln!(
            "skipped: the relay benchmark needs smtp-sink, from Postfix \
             (see benches/relay-postfix.sh for installing it)"
        );
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the relay benchmark runs smtp-sink and Postfix, which needs root");
        return;
    }
    if bins.is_empty() {
        bins.push(Target::mailroom(support::BIN));
    }
    let mut targets = bins;
    if postfix && !on_path("postfix") {
        eprintln!("Postfix is not installed: mailroom only");
        postfix = false;
    }
    if postfix {
        targets.push(Target::Postfix);
        let version = Command::new("postconf")
            .args(["-d", "-h", "mail_version"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        println!("Postfix {version}, its defaults (benches/relay-postfix.sh)");
    }
    let workloads: Vec<Workload> = if specs.is_empty() {
        DEFAULT
            .iter()
            .map(|s| Workload::parse(s).unwrap())
            .collect()
    } else {
        specs
            .iter()
            .map(|s| Workload::parse(s).unwrap_or_else(|| panic!("bad workload {s}")))
            .collect()
    };
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("relay");
    let _ = std::fs::remove_dir_all(&base);
    let width = targets.iter().map(|t| t.label().len()).max().unwrap_or(0);
    if wait {
        eprintln!(
            "each run starts {} s after the last one ended, its deletions written back \
             (--no-wait to skip)",
            common::SETTLE_CLEAN.as_secs()
        );
    }
    print_header(width);
    let mut results = Vec::new();
    let mut i = 0;
    let mut last: Option<Instant> = None;
    for round in 1..=rounds {
        for (wi, w) in workloads.iter().enumerate() {
            // The order swaps every round.
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for ti in order {
                let t = &targets[ti];
                let dir = base.join(format!("{i}-{}-{}", w.name, t.label()));
                i += 1;
                if let (true, Some(at)) = (wait, last) {
                    common::settle(at);
                }
                let o = run(t, w, &dir, timeout);
                last = Some(Instant::now());
                print_row(round, t.label(), width, w, &o);
                results.push((round, wi, ti, o));
            }
        }
    }
    print_summary(&workloads, &targets, &results);
    let _ = std::fs::remove_dir_all(&base);
}
