//! Milters from Debian's packages, started by the tests in a temporary
//! directory on Unix sockets: SpamAssassin's spamd behind spamass-milter
//! (GTUBE refused with 550 at the end of DATA, clean mail delivered with
//! its `X-Spam-Status:`), and OpenDKIM signing with a key made at test
//! time, the signature on the delivered (or relayed) copy checked by an
//! independent verifier, dkimpy, against the key's DNS record; ClamAV's
//! clamd behind clamav-milter, with a signature database of one test
//! signature made at test time (the official databases are downloaded by
//! freshclam, which the tests do not do), refusing EICAR in an
//! attachment; rspamd's proxy worker in milter mode (its own
//! configuration in the temporary directory, no Redis), refusing GTUBE.
//! Also SpamAssassin and OpenDKIM in a chain, and OpenDKIM as
//! `[relay] milters` for a client that logged in.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::pki::make_pki;
use support::smarthost::Smarthost;
use support::*;

/// A daemon started for a test, stopped by its PID.
struct Daemon {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Daemon {
    fn start(name: &'static str, cmd: &mut Command, dir: &Path, socket: &Path) -> Daemon {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = Daemon { child, name, log };
        assert!(
            wait_until(60, || socket.exists()),
            "{name} made no socket:\n{}",
            d.log()
        );
        d
    }

    /// `program` run with its configuration, `conf`, written to
    /// `dir/NAME.conf` and given after `args`.
    fn configured(
        name: &'static str,
        program: &str,
        args: &[&str],
        conf: String,
        dir: &Path,
        socket: &Path,
    ) -> Daemon {
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf).unwrap();
        Daemon::start(
            name,
            Command::new(program).args(args).arg(&path),
            dir,
            socket,
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM, so that spamd takes its children with it.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        if !wait_until(10, || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = self.name;
    }
}

/// Polls `done` every 100 ms for at most `secs` seconds.
fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    done()
}

fn am_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// spamd on a Unix socket and spamass-milter in front of it, refusing
/// at a score of 5.
fn spamassassin(dir: &Path) -> (Daemon, Daemon, PathBuf) {
    let spamd_sock = dir.join("spamd.sock");
    let mut spamd = Command::new("spamd");
    spamd
        .arg(format!("--socketpath={}", spamd_sock.display()))
        .args([
            "-s",
            "stderr",
            "-x",
            "--max-children",
            "1",
            "--min-children",
            "1",
        ])
        .arg(format!("--pidfile={}", dir.join("spamd.pid").display()));
    if am_root() {
        spamd.args(["-u", "nobody"]);
    }
    let spamd = Daemon::start("spamd", &mut spamd, dir, &spamd_sock);
    let milter_sock = dir.join("spamass.sock");
    let mut milter = Command::new("spamass-milter");
    milter
        .arg("-p")
        .arg(&milter_sock)
        .args(["-r", "5", "--", "-U"])
        .arg(&spamd_sock);
    let milter = Daemon::start("spamass-milter", &mut milter, dir, &milter_sock);
    (spamd, milter, milter_sock)
}

/// A key for test.example, selector `sel`, and OpenDKIM signing with it;
/// the key's DNS record text.
fn opendkim(dir: &Path) -> (Daemon, PathBuf, String) {
    let ok = Command::new("opendkim-genkey")
        .arg("-D")
        .arg(dir)
        .args(["-d", "test.example", "-s", "sel"])
        .status()
        .unwrap();
    assert!(ok.success(), "opendkim-genkey");
    let zone = std::fs::read_to_string(dir.join("sel.txt")).unwrap();
    // The quoted pieces of the TXT record, joined.
    let record: String = zone
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect();
    let sock = dir.join("opendkim.sock");
    let conf = format!(
        "Syslog no\nDomain test.example\nSelector sel\nKeyFile {}\nSocket local:{}\n\
         Mode s\nCanonicalization relaxed/simple\nPidFile {}\nBackground no\n\
         RequireSafeKeys false\nInternalHosts 127.0.0.1\n",
        dir.join("sel.private").display(),
        sock.display(),
        dir.join("opendkim.pid").display()
    );
    let d = Daemon::configured("opendkim", "opendkim", &["-f", "-x"], conf, dir, &sock);
    (d, sock, record)
}

/// Checks the DKIM signature of `message` with dkimpy, the key's DNS
/// record given; the verifier's word.
fn dkim_verifies(message: &[u8], record: &str, dir: &Path) -> bool {
    let path = dir.join("to-verify.eml");
    std::fs::write(&path, message).unwrap();
    let script = r#"
import dkim, sys
record = sys.argv[2].encode()
data = open(sys.argv[1], "rb").read()
if b"\r\n" not in data:
    data = data.replace(b"\n", b"\r\n")
def dns(name, timeout=5):
    assert name == b"sel._domainkey.test.example.", name
    return record
print(dkim.verify(data, dnsfunc=dns))
"#;
    let out = python_ok(script, &[path.to_str().unwrap(), record], "dkimpy");
    out.trim() == "True"
}

fn needs(tools: &[&str]) -> bool {
    tools.iter().all(|t| tool(t))
}

fn server_with(milters: &str, server: &str, tables: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(
        dir.path(),
        &format!("milters = [{milters}]"),
        server,
        tables,
    );
    Server::start_config(dir, &text)
}

/// EICAR's test file.
const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// clamd with one signature, EICAR's, and clamav-milter in front of it,
/// rejecting what is infected and marking what is not.
fn clamav(dir: &Path) -> (Daemon, Daemon, PathBuf) {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    let hex: String = EICAR.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        db.join("test.ndb"),
        format!("Mailroom.Test.EICAR:0:*:{hex}\n"),
    )
    .unwrap();
    let clamd_sock = dir.join("clamd.sock");
    let conf = format!(
        "LocalSocket {}\nDatabaseDirectory {}\nForeground yes\nPidFile {}\n",
        clamd_sock.display(),
        db.display(),
        dir.join("clamd.pid").display()
    );
    let clamd = Daemon::configured("clamd", "clamd", &["-c"], conf, dir, &clamd_sock);
    let milter_sock = dir.join("clamav-milter.sock");
    let conf = format!(
        "MilterSocket unix:{}\nClamdSocket unix:{}\nOnInfected Reject\nForeground yes\n\
         PidFile {}\nAddHeader Replace\n",
        milter_sock.display(),
        clamd_sock.display(),
        dir.join("clamav-milter.pid").display()
    );
    let milter = Daemon::configured(
        "clamav-milter",
        "clamav-milter",
        &["-c"],
        conf,
        dir,
        &milter_sock,
    );
    (clamd, milter, milter_sock)
}

/// rspamd with the configuration Debian ships, its proxy worker speaking
/// milter on a Unix socket, the other workers off or on Unix sockets, and
/// its files in `dir`; no Redis (so no Bayes), no DNS needed for GTUBE.
fn rspamd(dir: &Path) -> (Daemon, PathBuf) {
    let conf = dir.join("local.d");
    std::fs::create_dir_all(&conf).unwrap();
    for sub in ["db", "run", "log"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let proxy = dir.join("proxy.sock");
    let files = [
        (
            "worker-proxy.inc",
            format!(
                "bind_socket = \"{} mode=0666\";\nmilter = yes;\ntimeout = 120s;\n\
                 upstream \"local\" {{\n  default = yes;\n  self_scan = yes;\n}}\n",
                proxy.display()
            ),
        ),
        ("worker-normal.inc", "enabled = false;\n".to_string()),
        ("worker-fuzzy.inc", "enabled = false;\n".to_string()),
        (
            "worker-controller.inc",
            format!(
                "bind_socket = \"{} mode=0600\";\n",
                dir.join("controller.sock").display()
            ),
        ),
        (
            "logging.inc",
            "type = \"console\";\nlevel = \"error\";\n".to_string(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(conf.join(name), text).unwrap();
    }
    let mut cmd = Command::new("rspamd");
    cmd.args(["-f", "-c", "/etc/rspamd/rspamd.conf"])
        .arg(format!("--var=LOCAL_CONFDIR={}", dir.display()))
        .arg(format!("--var=DBDIR={}", dir.join("db").display()))
        .arg(format!("--var=RUNDIR={}", dir.join("run").display()))
        .arg(format!("--var=LOGDIR={}", dir.join("log").display()))
        .arg("-p")
        .arg(dir.join("run/rspamd.pid"));
    if am_root() {
        // Its workers would refuse to run as root without it.
        cmd.arg("-i");
    }
    let d = Daemon::start("rspamd", &mut cmd, dir, &proxy);
    (d, proxy)
}

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// smtplib sends GTUBE, then a clean message: what it heard of each.
fn send_gtube_then_clean(port: u16) -> String {
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
spam = "From: carol@remote.example\r\nTo: alice@test.example\r\nSubject: spam\r\n\r\n" + sys.argv[2] + "\r\n"
try:
    s.sendmail("carol@remote.example", ["alice@test.example"], spam)
    print("spam accepted")
except smtplib.SMTPDataError as e:
    print("spam", e.smtp_code, e.smtp_error.decode())
clean = "From: carol@remote.example\r\nTo: alice@test.example\r\nSubject: clean\r\nMessage-ID: <clean@remote.example>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nHello Alice, lunch on Friday?\r\n"
s.sendmail("carol@remote.example", ["alice@test.example"], clean)
print("clean accepted")
s.quit()
"#;
    python_ok(script, &[port.to_string(), GTUBE.to_string()], "smtplib")
}

#[test]
fn spamassassin_refuses_gtube_before_the_250_and_marks_clean_mail() {
    if !needs(&["spamd", "spamass-milter", "python3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_spamd, _milter, sock) = spamassassin(tmp.path());
    let srv = server_with(&format!("\"unix:{}\"", sock.display()), "", "");
    let out = send_gtube_then_clean(srv.addr.port());
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("spam 550 5.7.1"), "{out}");
    assert_eq!(lines[1], "clean accepted", "{out}");
    let got = srv.messages("alice");
    assert_eq!(got.len(), 1, "the spam is not delivered");
    let p = Parsed::new(got[0].clone());
    assert_eq!(p.subject().as_deref(), Some("clean"));
    let status = p.header("X-Spam-Status").unwrap_or_default();
    assert!(status.starts_with("No"), "{status:?}");
    assert!(
        std::fs::read_dir(srv.dir.path().join("spool"))
            .unwrap()
            .count()
            == 0
    );
}

#[test]
fn opendkim_signs_and_an_independent_verifier_accepts_the_signature() {
    if !needs(&["opendkim", "opendkim-genkey", "python3"]) {
        return;
    }
    if !python_has_dkim() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_dkim, sock, record) = opendkim(tmp.path());
    let srv = server_with(&format!("\"unix:{}\"", sock.display()), "", "");
    let mut c = srv.connect().hello();
    let body = "From: Alice <alice@test.example>\r\nTo: bob@test.example\r\nSubject: signed\r\n\
                Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <s1@test.example>\r\n\r\n\
                A signed message.\r\n..with a dot-stuffed line\r\n";
    let r = c.send_mail("alice@test.example", &["bob@test.example"], body);
    assert_eq!(r.code, 250, "{r:?}");
    let got = srv.messages("bob");
    assert_eq!(got.len(), 1);
    let p = Parsed::new(got[0].clone());
    let sig = p.header("DKIM-Signature").expect("signed");
    assert!(
        sig.contains("d=test.example") && sig.contains("s=sel"),
        "{sig}"
    );
    assert!(
        dkim_verifies(&got[0], &record, tmp.path()),
        "the signature verifies"
    );
    // A changed copy does not: the verifier is not saying yes to all.
    let tampered = String::from_utf8_lossy(&got[0]).replace("A signed message.", "A changed one.");
    assert!(!dkim_verifies(tampered.as_bytes(), &record, tmp.path()));
}

/// The one message the smarthost got is signed, and the signature
/// verifies.
fn assert_relayed_signed(sink: &Smarthost, srv: &Server, record: &str, dir: &Path) {
    let relayed = sink.wait_for(1, std::time::Duration::from_secs(30));
    assert_eq!(relayed.len(), 1, "{}", srv.log());
    let data = &relayed[0].data;
    let text = String::from_utf8_lossy(data);
    assert!(text.contains("DKIM-Signature:"), "{text}");
    assert!(dkim_verifies(data, record, dir));
}

fn python_has_dkim() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import dkim"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "python3-dkim is missing (tests/install-test-tools.sh installs it)"
    );
    ok
}

#[test]
fn spamassassin_then_opendkim_in_a_chain() {
    if !needs(&[
        "spamd",
        "spamass-milter",
        "opendkim",
        "opendkim-genkey",
        "python3",
    ]) {
        return;
    }
    if !python_has_dkim() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_spamd, _sa, sa_sock) = spamassassin(tmp.path());
    let (_dkim, dkim_sock, record) = opendkim(tmp.path());
    let list = format!(
        "\"unix:{}\", \"unix:{}\"",
        sa_sock.display(),
        dkim_sock.display()
    );
    let srv = server_with(&list, "", "");
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
spam = "From: alice@test.example\r\nSubject: spam\r\n\r\n" + sys.argv[2] + "\r\n"
try:
    s.sendmail("alice@test.example", ["bob@test.example"], spam)
    print("spam accepted")
except smtplib.SMTPDataError as e:
    print("spam", e.smtp_code)
ham = "From: alice@test.example\r\nTo: bob@test.example\r\nSubject: ham\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <ham@test.example>\r\n\r\nSee you at noon.\r\n"
s.sendmail("alice@test.example", ["bob@test.example"], ham)
s.quit()
"#;
    let out = python_ok(
        script,
        &[srv.addr.port().to_string(), GTUBE.to_string()],
        "smtplib",
    );
    assert_eq!(out.trim(), "spam 550", "{out}");
    let got = srv.messages("bob");
    assert_eq!(got.len(), 1);
    let p = Parsed::new(got[0].clone());
    assert!(p.header("X-Spam-Status").is_some());
    assert!(p.header("DKIM-Signature").is_some());
    assert!(dkim_verifies(&got[0], &record, tmp.path()));
}

#[test]
fn what_a_logged_in_client_sends_out_is_signed_by_the_relay_milters() {
    if !needs(&["opendkim", "opendkim-genkey", "python3"]) || !python_has_dkim() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_dkim, sock, record) = opendkim(tmp.path());
    let sink = Smarthost::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "dkim");
    let users = dir.path().join("users");
    let hash = Command::new("openssl")
        .args(["passwd", "-6", "secret-printer"])
        .output()
        .expect("openssl passwd");
    std::fs::write(
        &users,
        format!("printer:{}", String::from_utf8_lossy(&hash.stdout)),
    )
    .unwrap();
    std::fs::set_permissions(&users, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let server = "listen = [\"127.0.0.1:0\", { address = \"127.0.0.1:0\", require_tls = true, require_auth = true }]";
    let tables = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[auth]\nusers = \"{}\"\n\
         [relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nmilters = [\"unix:{}\"]\n",
        pki.cert.display(),
        pki.key.display(),
        users.display(),
        sink.port,
        sock.display()
    );
    let text =
        base_config(dir.path(), "", "", &tables).replace("listen = [\"127.0.0.1:0\"]", server);
    let srv = Server::start_config(dir, &text);
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
s.starttls(context=ctx)
s.login("printer", "secret-printer")
msg = "From: printer@test.example\r\nTo: someone@elsewhere.example\r\nSubject: scan\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <scan@test.example>\r\n\r\nYour scan is ready.\r\n"
s.sendmail("printer@test.example", ["someone@elsewhere.example"], msg)
s.quit()
"#;
    python_ok(
        script,
        &[
            srv.addrs[1].port().to_string(),
            pki.ca.display().to_string(),
        ],
        "smtplib submission",
    );
    assert_relayed_signed(&sink, &srv, &record, tmp.path());
    // Mail from outside on port 25 passes no relay milter: unsigned.
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "carol@remote.example",
        &["alice@test.example"],
        "From: carol@remote.example\r\nSubject: in\r\n\r\nhi\r\n",
    );
    assert_eq!(r.code, 250);
    let p = Parsed::new(srv.messages("alice")[0].clone());
    assert!(p.header("DKIM-Signature").is_none());
}

#[test]
fn clamav_refuses_a_virus_in_an_attachment_before_the_250() {
    if !needs(&["clamd", "clamav-milter", "python3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_clamd, _milter, sock) = clamav(tmp.path());
    let srv = server_with(&format!("\"unix:{}\"", sock.display()), "", "");
    let script = r#"
import smtplib, sys
from email.message import EmailMessage
def message(subject, attachment):
    m = EmailMessage()
    m["From"] = "carol@remote.example"
    m["To"] = "alice@test.example"
    m["Subject"] = subject
    m.set_content("Please see the attachment.")
    m.add_attachment(attachment.encode(), maintype="application", subtype="octet-stream", filename="invoice.com")
    return m
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
try:
    s.send_message(message("infected", sys.argv[2]))
    print("virus accepted")
except smtplib.SMTPDataError as e:
    print("virus", e.smtp_code, e.smtp_error.decode())
s.send_message(message("clean", "just an invoice"))
print("clean accepted")
s.quit()
"#;
    let out = python_ok(
        script,
        &[srv.addr.port().to_string(), EICAR.to_string()],
        "smtplib",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("virus 550"), "{out}");
    assert_eq!(lines[1], "clean accepted", "{out}");
    let got = srv.messages("alice");
    assert_eq!(got.len(), 1, "the virus is not delivered");
    let p = Parsed::new(got[0].clone());
    assert_eq!(p.subject().as_deref(), Some("clean"));
    assert_eq!(p.header("X-Virus-Status").as_deref(), Some("Clean"));
}

#[test]
fn rspamd_refuses_gtube_before_the_250_through_its_milter_proxy() {
    if !needs(&["rspamd", "python3"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_rspamd, sock) = rspamd(tmp.path());
    // Its workers start some seconds after its socket is bound: a long
    // command timeout covers that.
    let list = format!(
        "{{ address = \"unix:{}\", command_timeout = 60, message_timeout = 120 }}",
        sock.display()
    );
    let srv = server_with(&list, "", "");
    let out = send_gtube_then_clean(srv.addr.port());
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("spam 554 5.7.1 Gtube pattern"),
        "{out}\n{}",
        srv.log()
    );
    assert_eq!(lines[1], "clean accepted", "{out}");
    let got = srv.messages("alice");
    assert_eq!(got.len(), 1, "the spam is not delivered");
    let p = Parsed::new(got[0].clone());
    assert_eq!(p.subject().as_deref(), Some("clean"));
}

#[test]
fn what_sendmail_sends_out_is_signed_by_the_relay_milters() {
    if !needs(&["opendkim", "opendkim-genkey", "python3"]) || !python_has_dkim() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_dkim, sock, record) = opendkim(tmp.path());
    let sink = Smarthost::start(&[]);
    let tables = format!(
        "[relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nmilters = [\"unix:{}\"]\n",
        sink.port,
        sock.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let text = base_config(dir.path(), "", "", &tables);
    let srv = Server::start_config(dir, &text);
    let msg =
        b"From: Alice <alice@test.example>\nTo: someone@elsewhere.example\nSubject: backup done\n\
                Date: Mon, 07 Dec 2026 10:00:00 +0000\nMessage-ID: <backup@test.example>\n\n\
                The nightly backup finished.\n";
    let r = sendmail(
        &srv.config_path,
        &["-f", "alice@test.example", "someone@elsewhere.example"],
        msg,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_relayed_signed(&sink, &srv, &record, tmp.path());
}
