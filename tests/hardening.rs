// Hostile and careless clients: idle ones, slow ones, ones that never
// read. Each test runs the real server on loopback and shows that such
// clients cost it a socket, not a worker, and that it cuts them off in
// time; a real client (Python's smtplib) delivers meanwhile.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// Sends one message to alice with Python's smtplib (20 s timeout); how
/// long it took.
fn deliver_with_smtplib(srv: &Server, subject: &str) -> Duration {
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)\n\
         s.sendmail('x@remote.example', ['alice@test.example'],\n\
         'From: x@remote.example\\r\\nSubject: {subject}\\r\\n\\r\\nhello\\r\\n')\n\
         s.quit()\n",
        port = srv.addr.port()
    );
    let start = Instant::now();
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

fn delivered(srv: &Server, subject: &str) -> bool {
    srv.messages("alice")
        .iter()
        .any(|m| Parsed::new(m.clone()).subject().as_deref() == Some(subject))
}

/// The names of the server's threads.
fn thread_names(srv: &Server) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", srv.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

fn descriptors(srv: &Server) -> usize {
    open_descriptors(srv.pid())
}

/// Reads one reply line, or fails with what the server logged.
fn line(srv: &Server, s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => out.push(b[0]),
            Err(e) => panic!(
                "reading a reply: {e} (so far {:?}); the server's log:\n{}",
                out,
                srv.log()
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn fifty_silent_clients_do_not_stop_a_real_one() {
    if !tool("python3") {
        return;
    }
    let srv = Server::start_with("", "workers = 8\nmax_connections_per_ip = 100", "");
    let before = wait_for("the server's threads to start", || {
        let t = thread_names(&srv);
        let named = |name: &str| t.iter().any(|n| n.starts_with(name));
        (named("control") && named("relay-")).then_some(t.len())
    });
    // 25 that say nothing at all, 25 that say EHLO and then nothing.
    let mut silent: Vec<TcpStream> = (0..25)
        .map(|_| TcpStream::connect(srv.addr).unwrap())
        .collect();
    let mut ehlo: Vec<Client> = (0..25).map(|_| srv.connect().hello()).collect();
    // Every one of them was greeted: none waits behind the others for a
    // worker.
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let greeting = line(&srv, s);
        assert!(greeting.starts_with("220 "), "{greeting:?}");
    }
    let took = deliver_with_smtplib(&srv, "past fifty idle clients");
    eprintln!("figure: delivered past 50 idle clients in {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(delivered(&srv, "past fifty idle clients"));
    // No thread per connection.
    assert_eq!(thread_names(&srv).len(), before, "{:?}", thread_names(&srv));
    // The idle ones are still served when they speak again.
    ehlo[0].expect("NOOP", 250);
    silent[0].write_all(b"QUIT\r\n").unwrap();
    assert!(line(&srv, &mut silent[0]).starts_with("221 "));
}

#[test]
fn two_hundred_dripping_clients_do_not_stop_a_real_one() {
    if !tool("python3") {
        return;
    }
    let srv = Server::start_with("", "workers = 8\nmax_connections_per_ip = 300", "");
    let mut drips: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(srv.addr).unwrap())
        .collect();
    for s in &mut drips {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let greeting = line(&srv, s);
        assert!(greeting.starts_with("220 "), "{greeting:?}");
    }
    // Each sends "NOOP\r\n" one octet a second, while a real client
    // delivers.
    let dripping = std::thread::spawn(move || {
        for &b in b"NOOP\r\n" {
            for s in &mut drips {
                s.write_all(&[b]).unwrap();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        drips
    });
    std::thread::sleep(Duration::from_millis(1500));
    let took = deliver_with_smtplib(&srv, "past two hundred drips");
    eprintln!("figure: delivered past 200 dripping clients in {took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(delivered(&srv, "past two hundred drips"));
    // What each had sent, octet by octet, made one command.
    let mut drips = dripping.join().unwrap();
    for s in &mut drips {
        let r = line(&srv, s);
        assert!(r.starts_with("250 "), "{r:?}");
    }
}

#[test]
fn an_idle_client_is_timed_out_without_a_worker() {
    let srv = Server::start_with(
        "",
        "workers = 2\nmax_connections_per_ip = 10",
        "[timeouts]\ncommand = 2\n",
    );
    let fds = descriptors(&srv);
    let mut idle: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(srv.addr).unwrap())
        .collect();
    let start = Instant::now();
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(line(&srv, s).starts_with("220 "));
    }
    // Six idle clients on two workers: each is told of its timeout.
    for s in &mut idle {
        let r = line(&srv, s);
        assert!(r.starts_with("421 4.4.2"), "{r:?}");
        assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 0, "closed after the 421");
    }
    let took = start.elapsed();
    eprintln!("figure: 6 idle clients on 2 workers timed out after {took:?} (timeout 2 s)");
    assert!(took < Duration::from_secs(15), "{took:?}");
    wait_for("the descriptors to be closed", || {
        (descriptors(&srv) <= fds).then_some(())
    });
}

#[test]
fn a_client_that_never_reads_is_cut_off_within_the_write_timeout() {
    let srv = Server::start_with("", "", "[timeouts]\ncommand = 3\n");
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let batch = b"NOOP\r\n".repeat(10_000);
    // Write until the server stops reading (its replies fill both
    // buffers), then until it cuts the connection off.
    let mut blocked: Option<Instant> = None;
    let cut = loop {
        match s.write(&batch) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked.get_or_insert_with(Instant::now);
            }
            Err(_) => break blocked.map(|b| b.elapsed()),
        }
        if blocked.is_some_and(|b| b.elapsed() > Duration::from_secs(60)) {
            panic!("not cut off within 60 s");
        }
    };
    let cut = cut.expect("the server cut the connection off");
    eprintln!("figure: a client that never reads was cut off {cut:?} after its writes blocked (timeout 3 s)");
    // One write timeout (whole seconds, plus the second a timeout may
    // be kept longer), not a multiple of it.
    assert!(cut < Duration::from_secs(8), "{cut:?}");
    assert!(srv.wait_log("disconnect from"));
}

#[test]
fn rcpt_guessing_is_slowed_down_and_cut_off_without_holding_a_worker() {
    if !tool("python3") {
        return;
    }
    // One worker: a delay that slept on it would stop everyone else.
    let srv = Server::start_with(
        "",
        "workers = 1\nmax_connections_per_ip = 10\nsoft_error_limit = 1\nhard_error_limit = 2\nerror_delay = 4",
        "",
    );
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<prober@remote.example>", 250);
    let start = Instant::now();
    c.expect("RCPT TO:<nobody1@test.example>", 550);
    assert!(start.elapsed() < Duration::from_secs(2));
    // Past the soft limit the reply waits...
    c.send("RCPT TO:<nobody2@test.example>\r\n");
    std::thread::sleep(Duration::from_millis(300));
    // ...and meanwhile another client delivers at once.
    let took = deliver_with_smtplib(&srv, "during a delayed reply");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(delivered(&srv, "during a delayed reply"));
    let r = c.reply();
    assert_eq!(r.code, 550, "{r:?}");
    let delayed = start.elapsed();
    assert!(delayed >= Duration::from_secs(4), "{delayed:?}");
    eprintln!("figure: the second unknown recipient was answered after {delayed:?}; another client delivered in {took:?} meanwhile");
    // At the hard limit, the session ends.
    let r = c.cmd("RCPT TO:<nobody3@test.example>");
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text().contains("4.7.0"), "{r:?}");
    assert!(c.closed());
    assert!(srv.wait_log("too many errors"));
}

#[test]
fn a_flood_of_unknown_verbs_is_cut_off_at_the_hard_limit() {
    let srv = Server::start_with("", "error_delay = 0", "");
    let mut c = srv.connect();
    assert_eq!(c.reply().code, 220);
    // 20,000 unknown verbs in one go; the session ends at the 21st.
    let flood = b"XYZZY\r\n".repeat(20_000);
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        // The server may close before it has all of it.
        let _ = writer.write_all(&flood);
    });
    let mut codes = Vec::new();
    while let Some(r) = c.try_reply() {
        codes.push(r.code);
    }
    sender.join().unwrap();
    assert_eq!(codes.len(), 21, "{codes:?}");
    assert!(codes[..20].iter().all(|&c| c == 500), "{codes:?}");
    assert_eq!(codes[20], 421);
}

#[test]
fn one_address_holds_at_most_half_the_workers_by_default() {
    let srv = Server::start_with("", "workers = 4", "");
    let mut a = srv.connect();
    let mut b = srv.connect();
    assert_eq!(a.reply().code, 220);
    assert_eq!(b.reply().code, 220);
    let mut c = srv.connect();
    let r = c.try_reply().expect("a reply");
    assert_eq!(r.code, 421, "{r:?}");
    assert!(c.closed());
    // A limit that lets one address take every worker loads, with a
    // warning.
    let srv = Server::start_with("", "workers = 4\nmax_connections_per_ip = 20", "");
    assert!(
        srv.wait_log("lets one client address hold all 4 workers"),
        "{}",
        srv.log()
    );
    srv.connect().hello().expect("QUIT", 221);
    // A few connections at a time are no pressure.
    assert!(!srv.log().contains("under pressure"), "{}", srv.log());
}

/// CPU time (user + system) the process has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends with ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    // Clock ticks of 10 ms (USER_HZ 100).
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// Closes the idle connections, then delivers `subject` with smtplib.
fn delivers_once_they_leave(srv: &Server, idle: Vec<TcpStream>, subject: &str) {
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    let took = deliver_with_smtplib(srv, subject);
    assert!(delivered(srv, subject), "{took:?}");
}

/// Opens `n` idle connections: those greeted, and how many were told
/// `421 4.7.0` at once (none is left waiting in silence).
fn fill(srv: &Server, n: usize) -> (Vec<TcpStream>, usize) {
    let mut greeted = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = line(srv, &mut s);
        if r.starts_with("220 ") {
            greeted.push(s);
        } else {
            assert!(r.starts_with("421 4.7.0"), "{r:?}");
            refused += 1;
        }
    }
    (greeted, refused)
}

#[test]
fn connections_are_limited_to_what_the_descriptors_allow() {
    if !tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(
        dir.path(),
        "",
        "workers = 2\nmax_connections_per_ip = 1000\nhandoff_queue = 1000",
        "",
    );
    let srv = Server::start_config_with_file_limit(dir, &text, 128);
    let room: usize = {
        let log = srv.log();
        let at = log.find("] room for ").expect("the room is logged") + "] room for ".len();
        log[at..].split(' ').next().unwrap().parse().unwrap()
    };
    assert!((20..60).contains(&room), "room for {room}");
    let (greeted, refused) = fill(&srv, room + 20);
    assert_eq!((greeted.len(), refused), (room, 20));
    // The limit came first: the process never ran out.
    assert!(!srv.log().contains("accept failed"), "{}", srv.log());
    // Once the places are given back, mail flows again.
    delivers_once_they_leave(&srv, greeted, "after the connections closed");
}

#[test]
fn out_of_descriptors_clients_are_told_421_and_the_server_recovers() {
    if !tool("python3") {
        return;
    }
    // Two limits of different parity: with each connection costing two
    // descriptors, one of them runs out on a connection's second
    // descriptor, the other on the accept itself, including the accept
    // that finds nobody waiting (Linux says EMFILE before it looks).
    for limit in [64, 65] {
        out_of_descriptors_at(limit);
    }
}

fn out_of_descriptors_at(limit: u32) {
    let dir = tempfile::tempdir().unwrap();
    // A limit on connections above what the descriptors allow, so that
    // they run out: the reserve descriptor is what answers then.
    let text = base_config(
        dir.path(),
        "",
        "workers = 2\nmax_connections_per_ip = 1000\nhandoff_queue = 1000\nmax_connections = 1000",
        "",
    );
    let srv = Server::start_config_with_file_limit(dir, &text, limit);
    assert!(
        srv.wait_log("max_connections = 1000 is more than"),
        "{}",
        srv.log()
    );
    // Idle clients until the server has no descriptor left: each costs
    // it two (the socket, and the registry's handle on it).
    let (greeted, refused) = fill(&srv, 60);
    assert!(
        refused > 0 && greeted.len() > 5,
        "{} greeted",
        greeted.len()
    );
    // No spinning meanwhile, and the failures are logged once, not once
    // per attempt.
    let before = cpu_time(srv.pid());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_time(srv.pid()) - before;
    assert!(
        spent < Duration::from_millis(300),
        "{spent:?} of CPU in 2 s"
    );
    let logged = srv.log().matches("accept failed").count();
    assert!(
        logged <= 1,
        "{logged} accept failures logged:\n{}",
        srv.log()
    );
    eprintln!(
        "figure: out of descriptors at {limit}, {} clients greeted, {refused} told 421, {spent:?} of CPU in the next 2 s",
        greeted.len()
    );
    // Descriptors come back: the server serves again.
    delivers_once_they_leave(&srv, greeted, "after the descriptors came back");
}

#[test]
fn under_pressure_idle_clients_get_shorter_timeouts_until_it_passes() {
    let srv = Server::start_with(
        "",
        "workers = 1\nmax_connections_per_ip = 10",
        "[stress]\ncommand_timeout = 2\n",
    );
    // An idle client, parked with the full 300 s to send its next
    // command.
    let mut idle = srv.connect().hello();
    std::thread::sleep(Duration::from_millis(500));
    // A holds the only worker in the middle of its message; B waits.
    let mut a = srv.connect().hello();
    a.expect("MAIL FROM:<a@remote.example>", 250);
    a.expect("RCPT TO:<alice@test.example>", 250);
    a.expect("DATA", 354);
    a.send("Subject: slow\r\n\r\nfirst half\r\n");
    let start = Instant::now();
    let _b = srv.connect();
    assert!(srv.wait_log("under pressure"), "{}", srv.log());
    // A goes on at once (its waits are short now too) and is done.
    a.send("second half\r\n.\r\n");
    assert_eq!(a.reply().code, 250);
    a.expect("QUIT", 221);
    // The idle client got the short timeout.
    read_timeout_of(&mut idle, Duration::from_secs(20));
    let r = idle.try_reply().expect("a reply");
    let took = start.elapsed();
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text().contains("4.4.2"), "{r:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    eprintln!("figure: under pressure an idle client was timed out after {took:?} (stress timeout 2 s, normal 300 s)");
    // With nothing waiting the pressure passes, logged once each way.
    assert!(srv.wait_log("pressure gone"), "{}", srv.log());
    assert_eq!(srv.log().matches("under pressure").count(), 1);
}

fn read_timeout_of(c: &mut Client, t: Duration) {
    c.stream.set_read_timeout(Some(t)).unwrap();
}

#[test]
fn a_bdat_body_parked_between_chunks_gets_nothing_of_another_session() {
    let srv = Server::start_with("", "workers = 1\nmax_connections_per_ip = 10", "");
    // B sends its first chunk and pauses: it is parked.
    let mut b = srv.connect().hello();
    b.expect("MAIL FROM:<b@remote.example>", 250);
    b.expect("RCPT TO:<alice@test.example>", 250);
    b.send("BDAT 27\r\nSubject: chunked\r\n\r\nfirst\r\n");
    assert_eq!(b.reply().code, 250);
    std::thread::sleep(Duration::from_millis(600));
    // A, on the same worker, sends part of a message and vanishes.
    let mut a = srv.connect().hello();
    a.expect("MAIL FROM:<a@remote.example>", 250);
    a.expect("RCPT TO:<bob@test.example>", 250);
    a.expect("DATA", 354);
    a.send("Subject: secret\r\n\r\n".to_string() + &"SECRET OF A\r\n".repeat(100));
    std::thread::sleep(Duration::from_millis(300));
    drop(a);
    std::thread::sleep(Duration::from_millis(300));
    // B's last chunk, on the worker A left.
    b.send("BDAT 8 LAST\r\nsecond\r\n");
    assert_eq!(b.reply().code, 250);
    let mail = wait_for("B's message", || srv.messages("alice").pop());
    let text = String::from_utf8_lossy(&mail);
    assert!(!text.contains("SECRET"), "{text}");
    assert!(
        text.contains("first\nsecond\n") || text.contains("first\r\nsecond\r\n"),
        "{text}"
    );
    assert!(srv.messages("bob").is_empty());
}

#[test]
fn five_hundred_clients_at_once_on_four_workers_each_get_250_or_421() {
    let srv = Server::start_with("", "workers = 4\nmax_connections_per_ip = 1000", "");
    let addr = srv.addr;
    let clients: Vec<_> = (0..500)
        .map(|i| {
            std::thread::spawn(move || -> (usize, u16) {
                let mut c = Client::connect_with(addr, Duration::from_secs(60));
                match c.try_reply() {
                    Some(r) if r.code == 220 => {}
                    Some(r) => return (i, r.code),
                    None => return (i, 0),
                }
                let body = format!("Subject: crowd {i}\r\n\r\nhello\r\n.");
                for (line, want) in [
                    ("EHLO c.example", 250),
                    ("MAIL FROM:<x@remote.example>", 250),
                    ("RCPT TO:<alice@test.example>", 250),
                    ("DATA", 354),
                    (body.as_str(), 250),
                ] {
                    let r = c.cmd(line);
                    if r.code != want {
                        return (i, r.code);
                    }
                }
                (i, 250)
            })
        })
        .collect();
    let results: Vec<(usize, u16)> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let ok: Vec<usize> = results.iter().filter(|r| r.1 == 250).map(|r| r.0).collect();
    for (i, code) in &results {
        assert!(*code == 250 || *code == 421, "client {i} got {code}");
    }
    // Each 250 is one message, exactly once; nothing else arrived.
    let mut got: Vec<usize> = srv
        .messages("alice")
        .into_iter()
        .map(|m| {
            let subject = Parsed::new(m).subject().unwrap();
            subject.trim_start_matches("crowd ").parse().unwrap()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, ok);
    let hwm = std::fs::read_to_string(format!("/proc/{}/status", srv.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .to_string();
    eprintln!(
        "figure: 500 clients at once on 4 workers: {} got 250, {} got 421; peak {hwm}",
        ok.len(),
        results.len() - ok.len()
    );
    // And it serves normally afterwards.
    let mut c = srv.connect().hello();
    c.expect("QUIT", 221);
}

#[test]
fn a_return_path_the_sender_wrote_is_removed_at_final_delivery() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "real@remote.example",
        &["alice@test.example"],
        "Subject: forged\r\nReturn-Path: <forged@evil.example>\r\nFrom: x@remote.example\r\nreturn-path:\r\n <again@evil.example>\r\n\r\nbody\r\nReturn-Path: <in the body, kept>\r\n",
    );
    assert_eq!(r.code, 250);
    let mail = srv.messages("alice").pop().unwrap();
    let p = Parsed::new(mail.clone());
    assert_eq!(p.headers("Return-Path"), vec!["<real@remote.example>"]);
    let text = String::from_utf8_lossy(&mail);
    assert!(
        text.starts_with("Return-Path: <real@remote.example>\n"),
        "{text}"
    );
    assert!(!text.contains("evil.example"), "{text}");
    assert!(text.contains("Return-Path: <in the body, kept>"), "{text}");
    assert_eq!(p.subject().as_deref(), Some("forged"));
}

#[test]
fn a_binarymime_message_keeps_crlf_in_the_fields_we_add() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example> BODY=BINARYMIME", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    let body = b"Subject: binary\r\nFrom: x@remote.example\r\n\r\n\x00\xff\r\nline two\r\n";
    c.send(format!("BDAT {} LAST\r\n", body.len()));
    c.send(body);
    assert_eq!(c.reply().code, 250);
    let mail = srv.messages("alice").pop().unwrap();
    // Every line of it ends in CRLF, ours too: no bare LF anywhere.
    for (i, _) in mail.iter().enumerate().filter(|(_, &b)| b == b'\n') {
        assert!(
            i > 0 && mail[i - 1] == b'\r',
            "a bare LF at {i}: {:?}",
            String::from_utf8_lossy(&mail)
        );
    }
    assert!(mail.ends_with(b"\x00\xff\r\nline two\r\n"));
    let text = String::from_utf8_lossy(&mail);
    assert!(text.starts_with("Return-Path: <x@remote.example>\r\nDelivered-To: alice@test.example\r\nReceived: from "), "{text}");
    // An independent reader sees all the fields.
    let p = Parsed::new(mail);
    assert_eq!(p.subject().as_deref(), Some("binary"));
    assert_eq!(p.headers("Received").len(), 1);
}

#[test]
fn the_open_relay_test_list_is_refused_or_delivered_only_locally() {
    // A relay is configured (nothing listens there): mail for it would be
    // queued, so a form that slipped through would show in the queue.
    // (The error limits would end a session of so many refusals.) The
    // second listener offers AUTH, which these clients do not use: the
    // list is run on both.
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::make_pki(dir.path(), "relay");
    let users = dir.path().join("users");
    std::fs::write(&users, "").unwrap();
    std::fs::set_permissions(&users, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let tables = format!(
        "[relay]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
         [auth]\nusers = \"{}\"",
        pki.cert.display(),
        pki.key.display(),
        users.display()
    );
    let text = base_config(
        dir.path(),
        "",
        "soft_error_limit = 100\nhard_error_limit = 100",
        &tables,
    )
    .replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\", { address = \"127.0.0.1:0\", auth = true }]",
    );
    let srv = Server::start_config(dir, &text);
    // The address, and the local mailbox it may reach (None: refused).
    let table: &[(&str, Option<&str>)] = &[
        ("<user@remote.example>", None),
        ("<postmaster@remote.example>", None),
        ("<user%remote.example@test.example>", None),
        ("<alice%remote.example@test.example>", None),
        ("<user%remote.example@localhost>", None),
        ("<remote.example!user@test.example>", None),
        ("<remote.example!alice@test.example>", None),
        ("<remote.example!user>", None),
        ("<user@remote.example@test.example>", None),
        ("<alice@test.example@remote.example>", None),
        ("<\"user@remote.example\">", None),
        ("<\"user@remote.example\"@test.example>", None),
        ("<\"user%remote.example\"@test.example>", None),
        ("<@test.example:user@remote.example>", None),
        ("<@test.example,@localhost:user@remote.example>", None),
        ("<@remote.example:alice@test.example>", Some("alice")),
        ("<user@[192.0.2.1]>", None),
        ("<user@[IPv6:2001:db8::1]>", None),
        ("<alice@[192.0.2.1]>", None),
        ("<user@remote.example.>", None),
        ("<user@localhost.remote.example>", None),
        ("<user@test.example.remote.example>", None),
        ("<user@test.example>", None),
        ("<ALICE@TEST.EXAMPLE>", Some("alice")),
        ("<alice@Test.Example>", Some("alice")),
        ("<\"alice\"@test.example>", Some("alice")),
        ("<alice@localhost>", Some("alice")),
        ("<alice@test.example.>", None),
        ("<user@remote.example%test.example>", None),
        ("<user>", None),
        ("<@>", None),
        ("<>", None),
    ];
    let mut accepted = Vec::new();
    for addr in &srv.addrs {
        let mut c = Client::connect(*addr).hello();
        c.expect("MAIL FROM:<someone@remote.example>", 250);
        accepted.clear();
        for (rcpt, reach) in table {
            let r = c.cmd(&format!("RCPT TO:{rcpt}"));
            match reach {
                None => assert!(r.code >= 400, "{rcpt} was accepted on {addr}: {r:?}"),
                Some(_) => {
                    assert_eq!(r.code, 250, "{rcpt}: {r:?}");
                    accepted.push(*rcpt);
                }
            }
        }
        c.expect("DATA", 354);
        c.expect("Subject: relay test\r\n\r\nhi\r\n.", 250);
        c.expect("QUIT", 221);
    }
    // One copy for alice on each listener; nothing queued for the relay;
    // nobody else got anything.
    assert_eq!(srv.messages("alice").len(), 2);
    assert!(srv.messages("bob").is_empty());
    let queued: Vec<_> = std::fs::read_dir(srv.queue_dir().join("active"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(queued.is_empty(), "{queued:?}");
    eprintln!(
        "figure: {} open-relay forms refused, {} delivered to a local mailbox only",
        table.len() - accepted.len(),
        accepted.len()
    );
}

#[test]
fn started_as_root_with_a_user_it_runs_as_that_user_alone() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: started_as_root_with_a_user_it_runs_as_that_user_alone needs root");
        return;
    }
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let dir = tempfile::tempdir().unwrap();
    // nobody must be able to reach what is under it.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The mailboxes' directory is the user's to write in.
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    let n: u32 = uid.parse().unwrap();
    std::os::unix::fs::chown(&mail, Some(n), Some(gid.parse().unwrap())).unwrap();
    let text = base_config(dir.path(), "user = \"nobody\"", "", "");
    let srv = Server::start_config(dir, &text);
    assert!(srv.wait_log("running as nobody"), "{}", srv.log());
    let status = std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap()
    };
    assert_eq!(field("Uid:"), vec![uid.clone(); 4], "{status}");
    assert_eq!(field("Gid:"), vec![gid.clone(); 4], "{status}");
    assert!(field("Groups:").iter().all(|g| *g == gid), "{status}");
    // It still delivers, as that user, and the queue is its own.
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "x@remote.example",
        &["alice@test.example"],
        "Subject: as nobody\r\n\r\nhi\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}\n{}", srv.log());
    let new = srv.maildir("alice").join("new");
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&file).unwrap());
    assert_eq!(owner.to_string(), uid);
    let q = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(srv.queue_dir().join("active")).unwrap(),
    );
    assert_eq!(q.to_string(), uid);
}

#[test]
fn hostile_input_is_bounded_and_answered() {
    // (Error limits off: this session makes many errors on purpose.)
    let srv = Server::start_with(
        "",
        "soft_error_limit = 100000\nhard_error_limit = 100000\nmax_connections_per_ip = 10",
        "[timeouts]\ndata_total = 3\n",
    );
    let mut c = srv.connect().hello();
    // A 1 MB line without a line end, then its end: refused, read to its
    // end, and the session goes on.
    c.send(vec![b'x'; 1 << 20]);
    c.send("\r\n");
    let r = c.reply();
    assert_eq!(r.code, 500, "{r:?}");
    assert!(r.text().starts_with("5.5.6"), "{r:?}");
    c.expect("NOOP", 250);
    // NULs and invalid UTF-8.
    assert_eq!(c.cmd("NOOP \0\0").code, 501);
    assert_eq!(c.cmd("\0\0\0").code, 500);
    c.send(b"MAIL FROM:<\xff\xfe@remote.example>\r\n");
    assert_eq!(c.reply().code, 501);
    // 5,000 RCPTs in one write: the first 100 taken, the rest 452 4.5.3.
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.send("RCPT TO:<alice@test.example>\r\n".repeat(5000));
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..5000 {
        *codes.entry(c.reply().code).or_insert(0) += 1;
    }
    assert_eq!(codes.get(&250), Some(&100), "{codes:?}");
    assert_eq!(codes.get(&452), Some(&4900), "{codes:?}");
    c.expect("RSET", 250);
    let hwm: u64 = std::fs::read_to_string(format!("/proc/{}/status", srv.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap();
    assert!(hwm < 64 * 1024, "peak RSS {hwm} kB");
    // A body dripped an octet every half second is cut at data_total.
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.expect("RCPT TO:<alice@test.example>", 250);
    c.expect("DATA", 354);
    let start = Instant::now();
    let reply = loop {
        if c.stream.write_all(b"x").is_err() {
            break c.try_reply();
        }
        std::thread::sleep(Duration::from_millis(500));
        c.stream.set_nonblocking(true).unwrap();
        let mut peek = [0u8; 1];
        let ready = c.stream.peek(&mut peek).is_ok();
        c.stream.set_nonblocking(false).unwrap();
        if ready {
            break c.try_reply();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not cut off");
    };
    let took = start.elapsed();
    let r = reply.expect("a reply");
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text().contains("4.4.2"), "{r:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(srv.messages("alice").is_empty());
    eprintln!("figure: 1 MB line, NULs, bad UTF-8 and 5,000 RCPTs answered with peak RSS {hwm} kB; a dripped body cut after {took:?} (data_total 3 s)");
}
