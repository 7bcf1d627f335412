//! The protocols between systemd and the server, tested without systemd
//! as init (this machine's is not): the notifications, against a socket
//! of the test's own standing in for the service manager (`READY=1` once
//! the server serves, `RELOADING=1` with `MONOTONIC_USEC` then `READY=1`
//! around a SIGHUP, `STOPPING=1` on SIGTERM, `STATUS=` lines, and
//! `WATCHDOG=1` while the watchdog asks for it); socket activation,
//! through systemd's own `systemd-socket-activate`; and log lines for the
//! journal.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;
use support::*;

/// The service manager's end: a datagram socket at a path.
struct Manager {
    sock: UnixDatagram,
    got: Vec<String>,
}

impl Manager {
    /// At `notify.sock` in `dir`; the path comes back too.
    fn bind(dir: &std::path::Path) -> (Manager, String) {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        (Manager::on(sock), path.display().to_string())
    }

    fn on(sock: UnixDatagram) -> Manager {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Manager {
            sock,
            got: Vec::new(),
        }
    }

    /// Takes one datagram if one comes within 100 ms.
    fn receive(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let Ok(n) = self.sock.recv(&mut buf) else {
            return false;
        };
        self.got
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        true
    }

    /// Waits (bounded) for a datagram with this line; gives it back.
    fn wait_for(&mut self, line: &str) -> String {
        let mut seen = self.got.len();
        let mut found = None;
        let came = within_10s(|| {
            found = self.got[seen..]
                .iter()
                .find(|d| d.lines().any(|l| l == line))
                .cloned();
            seen = self.got.len();
            found.is_some() || {
                self.receive();
                false
            }
        });
        assert!(came, "no {line:?} in {:?}", self.got);
        found.unwrap()
    }
}

fn config(dir: &std::path::Path) -> String {
    base_config(dir, "", "", "")
}

/// With a relay nobody answers at, so that mail for elsewhere stays in
/// the queue (retried an hour later), and an alias `away` that forwards
/// there.
fn config_with_dead_relay(dir: &std::path::Path) -> String {
    let aliases = dir.join("aliases");
    std::fs::write(&aliases, "away: bob@elsewhere.example\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    base_config(
        dir,
        &format!("aliases = \"{}\"", aliases.display()),
        "",
        &format!(
            "[relay]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             [queue]\nretry_first = 3600\nretry_max = 3600\n"
        ),
    )
}

#[test]
fn readiness_reload_and_stop_are_told_to_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, path) = Manager::bind(dir.path());
    let text = config_with_dead_relay(dir.path());
    let mut srv = Server::start_config_with_env(dir, &text, &[("NOTIFY_SOCKET", &path)]);
    let ready = manager.wait_for("READY=1");
    assert!(
        ready.contains("STATUS=0 connections open, 0 messages in the queue"),
        "{ready:?}"
    );
    // Ready means serving.
    let mut c = srv.connect().hello();
    assert_eq!(
        c.send_mail(
            "x@remote.example",
            &["alice@test.example"],
            "Subject: hi\r\n\r\nhi\r\n"
        )
        .code,
        250
    );
    // One for elsewhere, which waits in the queue.
    assert_eq!(
        c.send_mail(
            "x@remote.example",
            &["away@test.example"],
            "Subject: out\r\n\r\nout\r\n"
        )
        .code,
        250
    );
    // The status follows the connections and the queue (looked at every
    // 10 s).
    let status = manager.wait_for("STATUS=1 connection open, 1 message in the queue");
    assert_eq!(status.lines().count(), 1, "{status:?}");
    // A reload: RELOADING=1 with the monotonic clock, then ready again.
    let before = manager.got.len();
    srv.signal("HUP");
    let reloading = manager.wait_for("RELOADING=1");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC")
        .parse()
        .unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    assert!(usec <= now && now - usec < 10_000_000, "{usec} vs {now}");
    manager.wait_for("READY=1");
    let order: Vec<&String> = manager.got[before..]
        .iter()
        .filter(|d| d.contains("RELOADING=1") || d.contains("READY=1"))
        .collect();
    assert!(order[0].contains("RELOADING=1"), "{order:?}");
    assert!(srv.wait_log("configuration reloaded"), "{}", srv.log());
    // A stop.
    drop(c);
    srv.signal("TERM");
    let stopping = manager.wait_for("STOPPING=1");
    assert!(stopping.contains("STATUS=stopping: "), "{stopping:?}");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn the_watchdog_hears_from_the_acceptor_at_half_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, path) = Manager::bind(dir.path());
    let text = config(dir.path());
    // 400 ms: pings about every 200 ms.
    let srv = Server::start_config_with_env(
        dir,
        &text,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "400000")],
    );
    manager.wait_for("READY=1");
    for _ in 0..5 {
        manager.wait_for("WATCHDOG=1");
    }
    // A watchdog meant for another process is not ours to feed.
    drop(srv);
    let dir = tempfile::tempdir().unwrap();
    let (mut manager, path) = Manager::bind(dir.path());
    let text = config(dir.path());
    let _srv = Server::start_config_with_env(
        dir,
        &text,
        &[
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", "400000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    manager.wait_for("READY=1");
    std::thread::sleep(Duration::from_millis(600));
    while manager.receive() {}
    assert!(
        !manager.got.iter().any(|d| d.contains("WATCHDOG=1")),
        "{:?}",
        manager.got
    );
}

#[test]
fn an_abstract_socket_works_and_a_missing_one_stops_nothing() {
    // @name: the abstract namespace, as systemd also hands out.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("mailroom-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut manager = Manager::on(UnixDatagram::bind_addr(&addr).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path());
    let _srv = Server::start_config_with_env(dir, &text, &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    manager.wait_for("READY=1");
    // A socket that is not there: the server serves all the same, and
    // says why it cannot notify.
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path());
    let gone = dir.path().join("nobody-listens.sock").display().to_string();
    let srv = Server::start_config_with_env(dir, &text, &[("NOTIFY_SOCKET", &gone)]);
    let mut c = srv.connect().hello();
    c.expect("NOOP", 250);
    assert!(
        srv.wait_log("cannot notify the service manager"),
        "{}",
        srv.log()
    );
}

#[test]
fn under_systemd_log_lines_carry_their_priority_and_no_timestamp() {
    // JOURNAL_STREAM names the server's stderr, as systemd sets it.
    let dir = tempfile::tempdir().unwrap();
    // A per-address limit as high as the workers is warned about.
    let text = base_config(
        dir.path(),
        "",
        "workers = 2\nmax_connections_per_ip = 2",
        "",
    );
    let srv = Server::start_config_after(
        dir,
        &text,
        "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) && export JOURNAL_STREAM &&",
    );
    let mut c = srv.connect().hello();
    c.expect("QUIT", 221);
    assert!(srv.wait_log("disconnect from"), "{}", srv.log());
    assert!(
        srv.log()
            .contains("<4>mailroom::server: server.max_connections_per_ip = 2"),
        "{}",
        srv.log()
    );
    let log = srv.log();
    for l in log.lines() {
        let p = l.get(..3).unwrap_or_default();
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&p),
            "no priority: {l:?}"
        );
        assert!(!l.contains("Z "), "a timestamp of its own: {l:?}");
    }
    assert!(log.contains("<6>mailroom::server: ready: "), "{log}");
    // A JOURNAL_STREAM that is not our stderr (inherited by something
    // writing elsewhere) changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path());
    let srv = Server::start_config_with_env(dir, &text, &[("JOURNAL_STREAM", "1:1")]);
    assert!(
        srv.log().lines().all(|l| l.starts_with('[')),
        "{}",
        srv.log()
    );
}

/// `log_format = "logfmt"`: every line is key=value pairs that a logfmt
/// reader takes apart (here a small parser of the format's grammar, with
/// quoting), with a timestamp of its own, or with the priority and none
/// under the journal.
#[test]
fn logfmt_lines_are_key_value_pairs_with_or_without_the_journal() {
    fn pairs(line: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = line;
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once('=')
                .unwrap_or_else(|| panic!("no = in {line:?}"));
            let (value, after) = if let Some(q) = after.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = q.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i + 1,
                        Some((_, '\\')) => v.push(match chars.next().unwrap().1 {
                            'n' => '\n',
                            c => c,
                        }),
                        Some((_, c)) => v.push(c),
                        None => panic!("unterminated value in {line:?}"),
                    }
                };
                (v, &q[end..])
            } else {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            };
            out.push((key.to_string(), value));
            rest = after.strip_prefix(' ').unwrap_or(after);
        }
        out
    }
    let keys = |p: &[(String, String)]| p.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let top = "log_format = \"logfmt\"";
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), top, "", "");
    let srv = Server::start_config(dir, &text);
    let mut c = srv.connect().hello();
    c.expect("QUIT", 221);
    assert!(srv.wait_log("disconnect from"), "{}", srv.log());
    let lines: Vec<Vec<(String, String)>> = srv.log().lines().map(pairs).collect();
    for p in &lines {
        assert_eq!(keys(p), ["ts", "level", "target", "msg"], "{p:?}");
        assert!(p[0].1.ends_with('Z') && p[0].1.len() == 20, "{p:?}");
    }
    assert!(
        lines.iter().any(|p| p[1].1 == "info"
            && p[2].1 == "mailroom::server"
            && p[3].1.starts_with("ready: ")),
        "{}",
        srv.log()
    );

    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), top, "", "");
    let srv = Server::start_config_after(
        dir,
        &text,
        "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) && export JOURNAL_STREAM &&",
    );
    assert!(srv.wait_log("ready: "), "{}", srv.log());
    for l in srv.log().lines() {
        let (prio, rest) = l.split_at(3);
        assert!(["<3>", "<4>", "<6>", "<7>"].contains(&prio), "{l:?}");
        assert_eq!(keys(&pairs(rest)), ["level", "target", "msg"], "{l:?}");
    }
}

/// Two free loopback ports (free when asked; nothing else here takes
/// ports from this range meanwhile).
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A server that systemd-socket-activate starts on the first connection
/// to one of `sockets` (name, port), its stderr in `log`.
struct Activated {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Activated {
    fn start(dir: &std::path::Path, text: &str, sockets: &[(&str, u16)]) -> Activated {
        let config = dir.join("mailroom.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.join("server.log");
        let mut cmd = std::process::Command::new("systemd-socket-activate");
        for (_, port) in sockets {
            cmd.arg("-l").arg(format!("127.0.0.1:{port}"));
        }
        let names: Vec<&str> = sockets.iter().map(|(n, _)| *n).collect();
        cmd.arg(format!("--fdname={}", names.join(":")))
            .arg(BIN)
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let a = Activated { child, log };
        // Listening before the server exists.
        assert!(a.wait_log("Listening on"), "{}", a.log());
        a
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) -> bool {
        within_10s(|| self.log().contains(needle))
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        // By its pid: systemd-socket-activate execs the server in place.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn socket_activation_serves_the_passed_sockets_with_their_roles() {
    if !tool("systemd-socket-activate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let [smtp, submission, configured] = free_ports();
    // The configured address is not passed, so not listened on; the
    // passed ones take their roles from their names.
    let text = base_config(dir.path(), "", "", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{configured}"));
    let srv = Activated::start(
        dir.path(),
        &text,
        &[("smtp", smtp), ("submission", submission)],
    );
    // The first connection starts the server, and is served.
    let mut c = Client::connect(format!("127.0.0.1:{smtp}").parse().unwrap()).hello();
    let r = c.send_mail(
        "x@remote.example",
        &["alice@test.example"],
        "Subject: by 25\r\n\r\nhi\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    let mut c = Client::connect(format!("127.0.0.1:{submission}").parse().unwrap()).hello();
    let r = c.send_mail(
        "x@remote.example",
        &["alice@test.example"],
        "Subject: by 587\r\n\r\nhi\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    let log = srv.log();
    assert!(
        log.contains(&format!(
            "listening on 127.0.0.1:{smtp} (smtp), from the service manager"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "listening on 127.0.0.1:{submission} (submission), from the service manager"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("not listening on 127.0.0.1:{configured}")),
        "{log}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", configured)).is_err());
    // The passed sockets (descriptors 3 and 4) are closed on exec, so a
    // pipe's command never holds the port.
    for fd in [3, 4] {
        let info =
            std::fs::read_to_string(format!("/proc/{}/fdinfo/{fd}", srv.child.id())).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert_ne!(flags & 0o2000000, 0, "descriptor {fd}: {info}");
    }
    let delivered = read_maildir(&dir.path().join("mail/alice/Maildir"));
    for subject in ["by 25", "by 587"] {
        let line = format!("Subject: {subject}");
        assert!(
            delivered
                .iter()
                .any(|m| String::from_utf8_lossy(m).lines().any(|l| l == line)),
            "{subject} not delivered"
        );
    }
}

#[test]
fn a_passed_smtps_socket_without_tls_is_a_configuration_error() {
    if !tool("systemd-socket-activate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let [smtps] = free_ports();
    let text = base_config(dir.path(), "", "", "");
    let mut srv = Activated::start(dir.path(), &text, &[("smtps", smtps)]);
    // The connection that starts it is closed unanswered.
    let _ = std::net::TcpStream::connect(("127.0.0.1", smtps));
    let mut status = None;
    assert!(
        within_10s(|| {
            status = srv.child.try_wait().unwrap();
            status.is_some()
        }),
        "still running:\n{}",
        srv.log()
    );
    let status = status.unwrap();
    assert_eq!(status.code(), Some(78), "{}", srv.log());
    assert!(
        srv.log().contains("needs TLS: give a [tls] section"),
        "{}",
        srv.log()
    );
}

/// The units hide /proc/sys (`ProcSubset=pid`): the default host name,
/// in the greeting, is still the system's, not "localhost".
#[test]
fn the_host_name_is_known_with_proc_sys_hidden() {
    if !namespaces_or_skip("the_host_name_is_known_with_proc_sys_hidden") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), "", "", "").replace(
        "hostname = \"mx.test.example\"\n",
        "local_domains = [\"test.example\"]\n",
    );
    let text = text.replacen("local_domains = [\"test.example\", \"localhost\"]\n", "", 1);
    let srv = Server::start_in_namespace_after(dir, &text, "mount -t tmpfs tmpfs /proc/sys\n");
    let name = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_ne!(name, "localhost");
    let mut c = srv.connect();
    let greeting = c.reply().text();
    assert!(
        greeting.starts_with(&format!("{name} ")),
        "{greeting:?}, not {name}"
    );
}
