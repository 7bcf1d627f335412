//! Test support: start the real `mailroom` binary on an ephemeral loopback
//! port with a temporary configuration, talk to it over raw sockets, and
//! read what it delivered with an independent parser (mail-parser).
//!
//! Servers are stopped by PID when the handle drops; everything is written
//! under a temporary directory.

#![allow(dead_code)]

pub mod delivery;
pub mod milter;
pub mod pki;
pub mod smarthost;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mailroom");

/// A running server with its own temporary directory.
pub struct Server {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log: Arc<Mutex<String>>,
}

/// The configuration every test server starts from; `extra` is appended
/// (top-level keys must come before any table, so tests pass whole tables
/// or use `Server::start_with`).
pub fn base_config(dir: &Path, top: &str, server: &str, tables: &str) -> String {
    let d = dir.display();
    format!(
        r#"hostname = "mx.test.example"
local_domains = ["test.example", "localhost"]
spool_dir = "{d}/spool"
queue_dir = "{d}/queue"
{top}
[server]
listen = ["127.0.0.1:0"]
{server}
[mailbox.alice]
maildir = "{d}/mail/alice/Maildir"
[mailbox.bob]
maildir = "{d}/mail/bob/Maildir"
[mailbox.postmaster]
maildir = "{d}/mail/postmaster/Maildir"
{tables}
"#
    )
}

impl Server {
    /// A server with the base configuration.
    pub fn start() -> Server {
        Server::start_with("", "", "")
    }

    /// `top`: top-level keys; `server`: keys of `[server]`; `tables`: more tables.
    pub fn start_with(top: &str, server: &str, tables: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = base_config(dir.path(), top, server, tables);
        Server::start_config(dir, &text)
    }

    /// A server with exactly this configuration text.
    pub fn start_config(dir: tempfile::TempDir, text: &str) -> Server {
        Server::start_config_with_env(dir, text, &[])
    }

    /// A server with exactly this configuration text and these
    /// environment variables.
    pub fn start_config_with_env(
        dir: tempfile::TempDir,
        text: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let config_path = dir.path().join("mailroom.toml");
        std::fs::write(&config_path, text).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(&config_path);
        cmd.envs(env.iter().copied());
        Server::spawn(dir, config_path, cmd)
    }

    /// A server with exactly this configuration text, allowed at most
    /// `files` open file descriptors (`ulimit -n`).
    pub fn start_config_with_file_limit(dir: tempfile::TempDir, text: &str, files: u32) -> Server {
        Server::start_config_after(dir, text, &format!("ulimit -n {files} &&"))
    }

    /// A server with exactly this configuration text, started by a shell
    /// after `prefix` (shell words ending in `&&`, or assignments).
    pub fn start_config_after(dir: tempfile::TempDir, text: &str, prefix: &str) -> Server {
        let config_path = dir.path().join("mailroom.toml");
        std::fs::write(&config_path, text).unwrap();
        let mut cmd = Command::new("sh");
        // `exec` keeps the pid: the child is the server itself.
        cmd.arg("-c").arg(format!(
            "{prefix} exec '{BIN}' --config '{}'",
            config_path.display()
        ));
        Server::spawn(dir, config_path, cmd)
    }

    /// A server in a mount namespace of its own (root only), where
    /// `binds` lists files bind-mounted over others (a test passwd over
    /// /etc/passwd, say) and `tmpfs` directories that get a small tmpfs of
    /// the given size. None of it is visible outside the namespace, and it
    /// goes when the server does; the server's own view of a path is under
    /// [`Server::seen`].
    pub fn start_in_namespace(
        dir: tempfile::TempDir,
        text: &str,
        binds: &[(&Path, &Path)],
        tmpfs: &[(&Path, &str)],
    ) -> Server {
        let mut script = String::new();
        for (from, to) in binds {
            script.push_str(&format!(
                "mount --bind '{}' '{}'\n",
                from.display(),
                to.display()
            ));
        }
        for (at, size) in tmpfs {
            script.push_str(&format!(
                "mount -t tmpfs -o size={size},mode=0755 tmpfs '{}'\n",
                at.display()
            ));
        }
        Server::start_in_namespace_after(dir, text, &script)
    }

    /// A server in a mount namespace of its own (root only), set up by
    /// the shell lines of `setup` first; [`Server::in_namespace`] runs
    /// more there later.
    pub fn start_in_namespace_after(dir: tempfile::TempDir, text: &str, setup: &str) -> Server {
        let config_path = dir.path().join("mailroom.toml");
        std::fs::write(&config_path, text).unwrap();
        let script = format!(
            "set -e\n{setup}exec '{BIN}' --config '{}'\n",
            config_path.display()
        );
        let mut cmd = Command::new("unshare");
        // `exec` keeps the pid: the child is the server itself.
        cmd.arg("--mount")
            .arg("--propagation")
            .arg("private")
            .arg("sh")
            .arg("-c")
            .arg(script);
        Server::spawn(dir, config_path, cmd)
    }

    /// Runs shell lines in the server's mount namespace.
    pub fn in_namespace(&self, script: &str) {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.pid().to_string())
            .arg("-m")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(dir: tempfile::TempDir, config_path: PathBuf, mut cmd: Command) -> Server {
        let mut child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mailroom");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        // The server logs each bound address, then "ready" (as text or
        // as logfmt's msg="ready: ..."); the reader
        // passes the addresses on and keeps collecting the log.
        let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(i) = line.find("listening on ") {
                        let addr = line[i + 13..].split_whitespace().next().unwrap_or_default();
                        let _ = tx.send(Some(addr.to_string()));
                    } else if line.contains(" ready: ") || line.contains("\"ready: ") {
                        let _ = tx.send(None);
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                let _ = tx.send(None);
            });
        }
        let mut addrs = Vec::new();
        let mut unreadable = None;
        while let Ok(Some(a)) = rx.recv_timeout(Duration::from_secs(20)) {
            match a.parse() {
                Ok(a) => addrs.push(a),
                Err(_) => unreadable = Some(a),
            }
        }
        // Whatever goes wrong, the server started here is stopped here.
        let (Some(&addr), None) = (addrs.first(), &unreadable) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mailroom did not start (or logged an unreadable address {unreadable:?}):\n{}",
                log.lock().unwrap()
            );
        };
        Server {
            addr,
            addrs,
            child: Some(child),
            dir,
            config_path,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// A path as the server sees it (inside its mount namespace, if it
    /// has one of its own).
    pub fn seen(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.pid()))
            .join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Kills the server with SIGKILL, as a crash would, and hands back its
    /// directory so that another server can start on it.
    pub fn crash(mut self) -> (tempfile::TempDir, String) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        let log = self.log();
        // No Drop of a running server follows: take the directory out.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, log)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (bounded).
    pub fn wait_log(&self, needle: &str) -> bool {
        within_10s(|| self.log().contains(needle))
    }

    /// Sends a signal to this server's PID.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits (bounded) for the server to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The queue directory of [`base_config`].
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user).join("Maildir")
    }

    /// The raw messages in a user's `Maildir/new`, in delivery order.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        read_maildir(&self.maildir(user))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a run of the binary ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary to its end (bounded; killed and failed past `limit`).
pub fn run_bin(args: &[&std::ffi::OsStr], dir: &Path, limit: Duration) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir);
    run_bounded(&mut cmd, None, limit)
}

/// Runs `cmd` to its end with `input` as its standard input (bounded:
/// killed and failed past 20 s).
pub fn run_command(cmd: &mut Command, input: &[u8]) -> Run {
    run_bounded(cmd, Some(input), Duration::from_secs(20))
}

/// Runs `cmd` to its end, its standard input `input` or nothing, and
/// panics if it has not ended within `limit`.
fn run_bounded(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Run {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let feed = child.stdin.take().map(|mut stdin| {
        let input = input.unwrap_or_default().to_vec();
        // A command may end without reading all of it; that is its business.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })
    });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not exit within {limit:?}; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(feed) = feed {
        let _ = feed.join();
    }
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The binary as local programs and people run it, `mailroom ARGS`, from
/// `/`: only its configuration says where the queue is.
pub fn local_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir("/");
    cmd
}

/// `mailroom sendmail -C CONFIG ARGS` with `input` as the message
/// (bounded).
pub fn sendmail(config: &Path, args: &[&str], input: &[u8]) -> Run {
    let mut cmd = local_command(&["sendmail", "-C"]);
    cmd.arg(config).args(args);
    run_command(&mut cmd, input)
}

/// `mailq -C CONFIG`, the binary called by that name (bounded).
pub fn mailq(config: &Path) -> Run {
    use std::os::unix::process::CommandExt;
    let mut cmd = local_command(&["-C"]);
    cmd.arg0("mailq").arg(config);
    run_command(&mut cmd, b"")
}

/// `mailroom queue -C CONFIG ARGS` (bounded).
pub fn queue_command(config: &Path, args: &[&str]) -> Run {
    let mut cmd = local_command(&["queue", "-C"]);
    cmd.arg(config).args(args);
    run_command(&mut cmd, b"")
}

/// Waits (at most 10 s, failing with `what` past that) until `ready`
/// gives something.
/// How many descriptors process `pid` has open.
pub fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// How many threads process `pid` has.
pub fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

pub fn wait_for<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let mut got = None;
    assert!(
        within_10s(|| {
            got = ready();
            got.is_some()
        }),
        "waited 10 s for {what}"
    );
    got.unwrap()
}

/// Looks every 20 ms until `done` is true, for at most 10 s; whether it
/// came true.
pub fn within_10s(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `mailroom --check-config FILE`, run in `dir` (bounded).
pub fn check_config(dir: &Path, file: &Path) -> Run {
    run_bin(
        &[std::ffi::OsStr::new("--check-config"), file.as_os_str()],
        dir,
        Duration::from_secs(20),
    )
}

/// True when this test can run servers in mount namespaces of their own:
/// the tests run as root and `unshare --mount` works here. Otherwise the
/// caller skips its test, with a note on stderr.
pub fn namespaces_or_skip(test: &str) -> bool {
    static USABLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let usable = USABLE.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root".into());
        }
        match Command::new("unshare").args(["--mount", "true"]).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "unshare --mount fails here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("cannot run unshare: {e}")),
        }
    });
    match usable {
        Ok(()) => true,
        Err(why) => {
            let line = format!("skipped: {test}: {why}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            false
        }
    }
}

/// True when the external program `name` is on PATH. When it is not: under
/// `CI` the test fails (CI installs it with tests/install-test-tools.sh),
/// otherwise a "skipped" line goes to stderr and the caller returns early.
pub fn tool(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{name} is not installed, and CI is set: run tests/install-test-tools.sh");
    }
    // Straight to the process's stderr, past the test harness's capture,
    // so the skip shows in a normal `cargo test` run.
    let line = format!("skipped: {name} not installed (tests/install-test-tools.sh installs it)\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    false
}

/// Splits an mboxrd file into its messages, without their `From ` lines
/// and with the quoting undone. Independent of mailroom's writer: a
/// message starts at a `From ` line after a blank line (or at the start).
pub fn mbox_messages(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_default();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut prev_blank = true;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if prev_blank && line.starts_with(b"From ") {
            // The blank line before a From line belongs to the separator.
            if let Some(last) = out.last_mut() {
                assert!(last.ends_with(b"\n\n"), "a message without its blank line");
                last.pop();
            }
            out.push(Vec::new());
        } else {
            let cur = out.last_mut().expect("an mbox starts with a From line");
            let quoted = line
                .iter()
                .position(|&b| b != b'>')
                .is_some_and(|i| i > 0 && line[i..].starts_with(b"From "));
            cur.extend_from_slice(if quoted { &line[1..] } else { line });
        }
        prev_blank = line == b"\n";
    }
    if let Some(last) = out.last_mut() {
        assert!(
            last.ends_with(b"\n\n") || last == b"\n",
            "the last message lacks its blank line"
        );
        last.pop();
    }
    out
}

pub fn read_maildir(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir.join("new")) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    // Delivery order: `<secs>.M<usecs>P<pid>Q<n>.host`, where `Q<n>`
    // counts up within one process.
    let order = |p: &PathBuf| -> (u64, u64, u64) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let num = |after: char, until: char| -> u64 {
            let rest = &name[name.find(after).expect("a Maildir name") + 1..];
            rest[..rest.find(until).unwrap()].parse().unwrap()
        };
        let secs = name[..name.find('.').unwrap()].parse().unwrap();
        (secs, num('M', 'P'), num('Q', '.'))
    };
    names.sort_by_key(order);
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// A parsed message, read with mail-parser (independent of mailroom).
pub struct Parsed {
    pub raw: Vec<u8>,
}

impl Parsed {
    pub fn new(raw: Vec<u8>) -> Parsed {
        Parsed { raw }
    }

    fn message(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .expect("mail-parser can read the message")
    }

    /// The raw values of every header with this name, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let m = self.message();
        m.headers()
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(name))
            .map(|h| {
                String::from_utf8_lossy(
                    &self.raw[h.offset_start() as usize..h.offset_end() as usize],
                )
                .trim()
                .to_string()
            })
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// The names of the headers, in order.
    pub fn header_names(&self) -> Vec<String> {
        self.message()
            .headers()
            .iter()
            .map(|h| h.name().to_string())
            .collect()
    }

    pub fn subject(&self) -> Option<String> {
        self.message().subject().map(str::to_string)
    }

    /// The body as raw bytes (everything after the blank line).
    pub fn body(&self) -> Vec<u8> {
        let m = self.message();
        self.raw[m.root_part().offset_body as usize..].to_vec()
    }
}

/// One SMTP reply: its code and lines (without the code and separator).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Reads one (possibly multi-line) reply from any stream; `None` at end
/// of stream.
pub fn read_reply(reader: &mut impl BufRead) -> Option<Reply> {
    let mut lines = Vec::new();
    let mut line = String::new();
    loop {
        let (code, last) = read_reply_line(reader, &mut line)?;
        lines.push(line[4..line.len() - 2].to_string());
        if last {
            return Some(Reply { code, lines });
        }
    }
}

/// Reads one line of a reply into `line` (cleared first) and checks its
/// form; its code, and whether it is the reply's last line. `None` at end
/// of stream.
fn read_reply_line(reader: &mut impl BufRead, line: &mut String) -> Option<(u16, bool)> {
    line.clear();
    match reader.read_line(line) {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
    assert!(line.len() >= 4, "short reply line: {line:?}");
    let code: u16 = line[..3].parse().expect("reply code");
    let sep = line.as_bytes()[3];
    assert!(sep == b' ' || sep == b'-', "bad separator in {line:?}");
    Some((code, sep == b' '))
}

/// A raw SMTP client over a TCP socket (also the throughput benchmark's
/// load client).
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    /// The line buffer of [`Client::reply_code`], kept between replies.
    line: String,
}

impl Client {
    /// Connects, with reads timing out after 20 s.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::connect_with(addr, Duration::from_secs(20))
    }

    /// Connects, with reads timing out after `read_timeout`. Every write
    /// is sent at once (no Nagle delay), so the time to a reply is the
    /// server's.
    pub fn connect_with(addr: SocketAddr, read_timeout: Duration) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client {
            stream,
            reader,
            line: String::new(),
        }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).unwrap();
    }

    /// Reads one (possibly multi-line) reply; panics on EOF.
    pub fn reply(&mut self) -> Reply {
        self.try_reply().expect("a reply, not end of stream")
    }

    /// Reads one reply; `None` at end of stream.
    pub fn try_reply(&mut self) -> Option<Reply> {
        read_reply(&mut self.reader)
    }

    /// Reads one (possibly multi-line) reply and returns only its code;
    /// panics on EOF. Allocates nothing once its buffer has grown: for
    /// loops of many messages, such as the benchmark's.
    pub fn reply_code(&mut self) -> u16 {
        loop {
            let (code, last) = read_reply_line(&mut self.reader, &mut self.line)
                .expect("a reply, not end of stream");
            if last {
                return code;
            }
        }
    }

    /// Sends a command line and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n"));
        self.reply()
    }

    /// Sends a command and checks the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "{line:?} got {r:?}");
        r
    }

    /// Reads the greeting and says EHLO.
    pub fn hello(mut self) -> Client {
        assert_eq!(self.reply().code, 220);
        self.expect("EHLO client.test.example", 250);
        self
    }

    /// True when the server has closed the connection (reads EOF).
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0) | Err(_))
    }

    /// MAIL, RCPTs, DATA with `body` (already CRLF and dot-stuffed, ending
    /// in CRLF); returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for t in to {
            self.expect(&format!("RCPT TO:<{t}>"), 250);
        }
        self.expect("DATA", 354);
        self.send(body);
        self.send(".\r\n");
        self.reply()
    }
}

/// Runs `python3 -c script args...`, which must succeed (else its
/// standard error, and `context`, are the panic); its standard output.
pub fn python_ok<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S], context: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{context}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first line `child` writes on its standard output (piped), read on
/// a thread so that the wait is bounded (20 s) even if it never writes
/// one; empty if it did not.
pub fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default()
}
