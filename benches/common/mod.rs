//! What the benchmarks share: the messages they send, starting a release
//! build of mailroom with a configuration of theirs, an SMTP transaction
//! as their load clients make it, and what `/proc` says of a process tree
//! and of the machine.
//!
//! Each bench target includes this module (`mod common;`) after
//! `tests/support` (as `support`), whose `Client` it drives.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::Client;

/// One message to `to`: its headers and 80-column body lines, about
/// `size` octets, CRLF line ends (no line starts with a dot). Its number
/// `n` is in its Subject.
pub fn message(n: usize, size: usize, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <load@client.example>\r\nTo: <{to}>\r\nSubject: bench {n}\r\nMessage-ID: <{n}@client.example>\r\n\r\n"
    )
    .into_bytes();
    let mut line = 0usize;
    while m.len() < size {
        let text = format!("{n:08} {line:08} ");
        m.extend_from_slice(text.as_bytes());
        m.extend(std::iter::repeat_n(
            b'a' + (line % 26) as u8,
            78 - text.len(),
        ));
        m.extend_from_slice(b"\r\n");
        line += 1;
    }
    m
}

/// The message with LF line ends, as local programs hand it to sendmail.
pub fn lf(m: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len());
    let mut i = 0;
    while i < m.len() {
        if m[i] == b'\r' && m.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(m[i]);
        i += 1;
    }
    out
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A mailroom daemon started for a benchmark, stopped (SIGKILL, by its
/// PID) when the handle drops.
pub struct Daemon {
    pub child: Child,
    /// Its first listener.
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// The last lines of its log, for a run that went wrong.
    log: Arc<Mutex<VecDeque<String>>>,
}

/// How many of the log's last lines a [`Daemon`] keeps.
const LOG_TAIL: usize = 40;

impl Daemon {
    /// Writes `config` to `dir/mailroom.toml` and starts `bin` with it in
    /// `dir`; returns once the daemon says it is ready.
    pub fn start(bin: &Path, dir: &Path, config: &str) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("mailroom.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mailroom");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(i) = line.find("listening on ") {
                addr = line[i + 13..]
                    .split_whitespace()
                    .next()
                    .and_then(|a| a.parse().ok());
            }
            if line.contains(" ready: ") {
                break;
            }
        }
        // Keep reading the log (at info level, as deployed) so the server
        // never blocks on a full pipe.
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    if l.len() == LOG_TAIL {
                        l.pop_front();
                    }
                    l.push_back(line);
                }
            });
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mailroom did not start ({})", path.display());
        };
        Daemon {
            child,
            addr,
            dir: dir.to_path_buf(),
            config: path,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines it logged.
    pub fn log_tail(&self) -> String {
        let l = self.log.lock().unwrap();
        l.iter().map(|s| format!("{s}\n")).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new session: the greeting, then EHLO.
pub fn smtp_open(addr: SocketAddr) -> Client {
    let mut c = Client::connect_with(addr, Duration::from_secs(120));
    assert_eq!(c.reply_code(), 220, "greeting");
    c.send(b"EHLO load.client.example\r\n");
    assert_eq!(c.reply_code(), 250, "EHLO");
    c
}

/// Sends one message from `load@client.example` to `rcpt` (the envelope
/// in one write with `pipelining`); the time from the final dot to its
/// 250.
pub fn smtp_send(c: &mut Client, rcpt: &str, msg: &[u8], pipelining: bool) -> Duration {
    let envelope = format!("MAIL FROM:<load@client.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
    let envelope = envelope.as_bytes();
    if pipelining {
        c.send(envelope);
        assert_eq!(c.reply_code(), 250, "MAIL");
        assert_eq!(c.reply_code(), 250, "RCPT");
        assert_eq!(c.reply_code(), 354, "DATA");
    } else {
        for (cmd, code) in envelope
            .split_inclusive(|&b| b == b'\n')
            .zip([250, 250, 354])
        {
            c.send(cmd);
            assert_eq!(c.reply_code(), code, "envelope");
        }
    }
    c.send(msg);
    let t = Instant::now();
    c.send(b".\r\n");
    assert_eq!(c.reply_code(), 250, "end of data");
    t.elapsed()
}

pub fn smtp_quit(mut c: Client) {
    c.send(b"QUIT\r\n");
    assert_eq!(c.reply_code(), 221, "QUIT");
}

/// What `/proc` says of processes and of the machine. CPU times are in
/// clock ticks (`CLK_TCK`, 10 ms here) turned into durations.
/// How long new files stay slow to create after many were deleted: ext4
/// without a journal (this machine's root) skips inodes freed less than
/// 60 s ago, 360 s while their inode table block is still dirty
/// (`recently_deleted` in ialloc.c), and each skip costs a lookup.
pub const SETTLE_CLEAN: Duration = Duration::from_secs(65);

/// Waits until a run's deletions at `deleted` no longer slow down the
/// next one: writes back the inode tables (`sync`), then waits out
/// [`SETTLE_CLEAN`].
pub fn settle(deleted: Instant) {
    nix::unistd::sync();
    if let Some(rest) = SETTLE_CLEAN.checked_sub(deleted.elapsed()) {
        std::thread::sleep(rest);
    }
}

pub mod proc {
    use std::time::Duration;

    pub fn clk_tck() -> u64 {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64
    }

    fn ticks(t: u64) -> Duration {
        Duration::from_micros(t * 1_000_000 / clk_tck())
    }

    /// The fields of `/proc/PID/stat` after the command name: `[0]` is
    /// the state, `[1]` the parent, `[11]`..`[14]` utime, stime, cutime,
    /// cstime. Fields that are not numbers read as 0.
    fn stat(pid: &str) -> Option<Vec<u64>> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &text[text.rfind(')')? + 2..];
        Some(
            rest.split(' ')
                .map(|x| x.trim().parse().unwrap_or(0))
                .collect(),
        )
    }

    /// User and system time of a process (all its threads) and of its
    /// children that it has waited for.
    pub fn cpu(pid: u32) -> Duration {
        stat(&pid.to_string()).map_or(Duration::ZERO, |f| ticks(f[11] + f[12] + f[13] + f[14]))
    }

    /// User and system time of this process alone (all its threads), and
    /// of the children it has waited for.
    pub fn own_cpu() -> (Duration, Duration) {
        stat("self").map_or((Duration::ZERO, Duration::ZERO), |f| {
            (ticks(f[11] + f[12]), ticks(f[13] + f[14]))
        })
    }

    /// `root` and every process descended from it, now.
    pub fn tree(root: u32) -> Vec<u32> {
        let mut parent = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let Ok(pid) = name.parse::<u32>() else {
                    continue;
                };
                if let Some(f) = stat(name) {
                    parent.push((pid, f[1] as u32));
                }
            }
        }
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let p = out[i];
            out.extend(parent.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
            i += 1;
        }
        out
    }

    /// The CPU of a whole tree: every live process's own and its reaped
    /// children's (a Postfix daemon that has exited is in its master's
    /// cutime and cstime).
    pub fn tree_cpu(root: u32) -> Duration {
        tree(root).into_iter().map(cpu).sum()
    }

    /// `key` of `/proc/PID/status` (VmRSS:, VmHWM:), in KiB.
    pub fn status_kib(pid: u32, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The resident and proportional set sizes summed over a tree, in
    /// KiB. RSS counts a shared library once for every process mapping
    /// it; PSS splits it among them.
    pub fn tree_mem(root: u32) -> (u64, u64) {
        let mut rss = 0;
        let mut pss = 0;
        for pid in tree(root) {
            rss += status_kib(pid, "VmRSS:");
            pss += std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("Pss:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                })
                .unwrap_or(0);
        }
        (rss, pss)
    }

    /// The machine's busy time so far, all CPUs together (`/proc/stat`:
    /// everything but idle and iowait), and the part of it that is the
    /// kernel's own: kernel threads (writeback, journal, softirq
    /// threads), interrupts and softirqs.
    pub fn machine() -> (Duration, Duration) {
        let Ok(text) = std::fs::read_to_string("/proc/stat") else {
            return (Duration::ZERO, Duration::ZERO);
        };
        let v: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if v.len() < 8 {
            return (Duration::ZERO, Duration::ZERO);
        }
        let busy = v[..8].iter().sum::<u64>() - v[3] - v[4];
        let mut kernel = v[5] + v[6];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                if let Some(f) = stat(name) {
                    if name == "2" || f[1] == 2 {
                        kernel += f[11] + f[12];
                    }
                }
            }
        }
        (ticks(busy), ticks(kernel))
    }
}

/// The protocol steps a milter asks to skip when it implements only the
/// end of the message, as libmilter asks for a filter without the other
/// callbacks: connect, HELO, MAIL, RCPT, DATA, header fields, end of
/// header and body are not sent.
pub const EOM_ONLY: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200;

/// A milter that lets everything pass, as fast as the protocol allows,
/// on a thread per connection: it negotiates version 6 with all actions
/// and the protocol `steps` given (0: nothing skipped, so that every
/// stage is a round trip) and answers "continue" to each command. Its
/// address for `milters`: on TCP (127.0.0.1, an ephemeral port), or on a
/// Unix socket at `unix` if given.
pub fn noop_milter(steps: u32, unix: Option<&std::path::Path>) -> String {
    match unix {
        Some(path) => {
            let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    std::thread::spawn(move || pass_through(conn, steps));
                }
            });
            format!("unix:{}", path.display())
        }
        None => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let _ = conn.set_nodelay(true);
                    std::thread::spawn(move || pass_through(conn, steps));
                }
            });
            format!("inet:127.0.0.1:{port}")
        }
    }
}

/// One connection of [`noop_milter`].
fn pass_through(mut conn: impl std::io::Read + std::io::Write, steps: u32) {
    let mut negotiated = vec![0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 1, 0xff];
    negotiated.extend_from_slice(&steps.to_be_bytes());
    let mut head = [0u8; 4];
    let mut data = Vec::new();
    loop {
        if conn.read_exact(&mut head).is_err() {
            return;
        }
        data.resize(u32::from_be_bytes(head) as usize, 0);
        if conn.read_exact(&mut data).is_err() {
            return;
        }
        let reply: &[u8] = match data.first() {
            Some(b'O') => &negotiated,
            // Macros, abort and quit get no reply.
            Some(b'D' | b'A') => continue,
            Some(b'Q') | None => return,
            Some(_) => &[0, 0, 0, 1, b'c'],
        };
        if conn.write_all(reply).is_err() {
            return;
        }
    }
}
