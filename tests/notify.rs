//! systemd's notification protocol, against a socket of the test's own
//! standing in for the service manager (this machine's init is not
//! systemd): `READY=1` once the server serves, `RELOADING=1` with
//! `MONOTONIC_USEC` then `READY=1` around a SIGHUP, `STOPPING=1` on
//! SIGTERM, `STATUS=` lines, and `WATCHDOG=1` while the watchdog asks
//! for it; and nothing at all without `NOTIFY_SOCKET`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use support::*;

/// The service manager's end: a datagram socket at a path.
struct Manager {
    sock: UnixDatagram,
    got: Vec<String>,
}

impl Manager {
    fn bind(dir: &std::path::Path) -> (Manager, String) {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        (
            Manager {
                sock,
                got: Vec::new(),
            },
            path.display().to_string(),
        )
    }

    /// Waits (bounded) for a datagram with this line; gives it back.
    fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = self.got.len();
        loop {
            if let Some(d) = self.got[seen..]
                .iter()
                .find(|d| d.lines().any(|l| l == line))
            {
                return d.clone();
            }
            seen = self.got.len();
            assert!(Instant::now() < deadline, "no {line:?} in {:?}", self.got);
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.got
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
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
    let mut buf = [0u8; 4096];
    while let Ok(n) = manager.sock.recv(&mut buf) {
        manager
            .got
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
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
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path());
    let _srv = Server::start_config_with_env(dir, &text, &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !got.iter().any(|d: &String| d.contains("READY=1")) {
        let n = sock.recv(&mut buf).expect("a notification");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
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
