//! Authenticated submission (AUTH, RFC 4954) against the real server,
//! over TLS with a test CA made at test time, with real clients nobody
//! here wrote: Python's smtplib, swaks (PLAIN and LOGIN), curl, lettre
//! and msmtp; and what is refused: a wrong password, an unknown login,
//! AUTH before TLS, malformed base64, a cancelled exchange, mail before
//! AUTH on a listener that requires it, AUTH where it is not offered, and
//! the session closed at the third failure.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::pki::{curl_to_alice, make_pki, Pki};
use support::smarthost::Smarthost;
use support::*;

/// The password of `printer` (argon2id) and of `nas` (SHA-512-crypt, made
/// by openssl).
const PRINTER: &str = "ink jet 42";
const NAS: &str = "disk:full";

/// Where authenticated mail for other domains goes.
const REMOTE: &str = "friend@elsewhere.example";

/// A server with TLS whose first listener is port 25 as ever (no AUTH),
/// the second submission with STARTTLS and AUTH required, the third
/// implicit TLS with AUTH required; and the loopback smarthost it relays
/// to.
fn submission_server() -> (Server, Pki, Smarthost) {
    submission_server_with("")
}

/// The same with more keys in `[auth]`.
fn submission_server_with(auth: &str) -> (Server, Pki, Smarthost) {
    let sink = Smarthost::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "auth");
    let users = dir.path().join("users");
    let nas = Command::new("openssl")
        .args(["passwd", "-6", NAS])
        .output()
        .expect("openssl passwd");
    assert!(nas.status.success());
    let nas = String::from_utf8(nas.stdout).unwrap();
    std::fs::write(
        &users,
        format!(
            "# devices\nprinter:{}\nnas:{}\n",
            mailroom::auth::hash(PRINTER).unwrap(),
            nas.trim()
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(&users, None, None).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tables = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[relay]\nhost = \"127.0.0.1\"\nport = {}\n\
         tls = \"none\"\n[queue]\nretry_first = 3600\n[auth]\nusers = \"{}\"\n{auth}",
        pki.cert.display(),
        pki.key.display(),
        sink.port,
        users.display()
    );
    let text = base_config(
        dir.path(),
        "",
        "smtps = [{ address = \"127.0.0.1:0\", require_auth = true }]",
        &tables,
    )
    .replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\", { address = \"127.0.0.1:0\", require_tls = true, \
         require_auth = true, role = \"submission\" }]",
    );
    (Server::start_config(dir, &text), pki, sink)
}

/// Waits for the smarthost to have `n` messages, and checks that each
/// went to [`REMOTE`] with a `Received:` that says ESMTPSA.
fn relayed(sink: &Smarthost, n: usize) {
    let got = sink.wait_for(n, Duration::from_secs(20));
    assert_eq!(got.len(), n, "{}", sink.transcript());
    for m in got {
        assert_eq!(m.rcpt_addresses(), [REMOTE]);
        let text = String::from_utf8_lossy(&m.data);
        assert!(text.contains("with ESMTPSA"), "{text}");
    }
}

/// The `Received:` field of alice's message with this subject.
fn received(srv: &Server, subject: &str) -> String {
    let m = srv
        .messages("alice")
        .into_iter()
        .map(Parsed::new)
        .find(|p| p.subject().as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("no message {subject:?} for alice"));
    m.header("Received").expect("a Received field")
}

/// What every script starts with: the modules, the CA (`ctx`), the two
/// ports it is given (`first`, `second`), the printer's `password`, and
/// `b64`.
const PREAMBLE: &str = r#"
import base64, smtplib, ssl, sys, time
ca, first, second, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
b64 = lambda s: base64.b64encode(s.encode()).decode()
"#;

/// Runs a Python script (after [`PREAMBLE`]) with the CA file, these
/// ports and the printer's password; it must succeed.
fn python(srv: &Server, pki: &Pki, script: &str, ports: [u16; 2]) -> String {
    let [a, b] = ports.map(|p| p.to_string());
    let args = [pki.ca.display().to_string(), a, b, PRINTER.to_string()];
    python_ok(&format!("{PREAMBLE}{script}"), &args, &srv.log())
}

#[test]
fn smtplib_logs_in_over_starttls_and_implicit_tls() {
    let (srv, pki, sink) = submission_server();
    let script = r#"
port, tls_port = first, second
with smtplib.SMTP("localhost", port, timeout=20) as s:
    s.starttls(context=ctx)
    s.ehlo("py.client.example")
    assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"], s.esmtp_features
    s.login("printer", password)
    s.sendmail("printer@test.example", ["alice@test.example", "friend@elsewhere.example"], "Subject: smtplib starttls\r\n\r\nhi\r\n")
with smtplib.SMTP_SSL("localhost", tls_port, context=ctx, timeout=20) as s:
    s.login("printer", password)
    s.sendmail("printer@test.example", ["alice@test.example", "friend@elsewhere.example"], "Subject: smtplib ssl\r\n\r\nhi\r\n")
"#;
    python(
        &srv,
        &pki,
        script,
        [srv.addrs[1].port(), srv.addrs[2].port()],
    );
    for subject in ["smtplib starttls", "smtplib ssl"] {
        let r = received(&srv, subject);
        assert!(r.contains("with ESMTPSA"), "{r}");
        assert!(!r.contains(PRINTER) && !r.contains("ink"), "{r}");
    }
    relayed(&sink, 2);
    assert!(
        srv.log().contains("authenticated as printer"),
        "{}",
        srv.log()
    );
    assert!(!srv.log().contains(PRINTER), "{}", srv.log());
}

#[test]
fn swaks_plain_and_login() {
    if !tool("swaks") {
        return;
    }
    let (srv, pki, sink) = submission_server();
    for (mechanism, user, password) in [("PLAIN", "printer", PRINTER), ("LOGIN", "nas", NAS)] {
        let subject = format!("swaks {mechanism}");
        let out = Command::new("swaks")
            .args(["--to", &format!("alice@test.example,{REMOTE}")])
            .args(["--from", &format!("{user}@test.example")])
            .args(["--header", &format!("Subject: {subject}")])
            .args(["--server", "127.0.0.1", "--port"])
            .arg(srv.addrs[1].port().to_string())
            .args(["--tls", "--tls-verify", "--tls-ca-path"])
            .arg(&pki.ca)
            .args([
                "--auth",
                mechanism,
                "--auth-user",
                user,
                "--auth-password",
                password,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "swaks {mechanism}: {text}");
        assert!(text.contains("235 2.7.0"), "{text}");
        assert!(received(&srv, &subject).contains("with ESMTPSA"));
    }
    relayed(&sink, 2);
}

#[test]
fn curl_user_over_starttls_and_smtps() {
    if !tool("curl") {
        return;
    }
    let (srv, pki, sink) = submission_server();
    let user = format!("nas:{NAS}");
    for (url, subject) in [
        (
            format!("smtp://127.0.0.1:{}", srv.addrs[1].port()),
            "curl starttls",
        ),
        (
            format!("smtps://127.0.0.1:{}", srv.addrs[2].port()),
            "curl smtps",
        ),
    ] {
        let extra = ["--user", user.as_str(), "--mail-rcpt", REMOTE];
        curl_to_alice(
            srv.dir.path(),
            &url,
            &pki.ca,
            &extra,
            "nas@test.example",
            subject,
        );
        assert!(received(&srv, subject).contains("with ESMTPSA"));
    }
    relayed(&sink, 2);
}

#[test]
fn lettre_with_credentials() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{Message, SmtpTransport, Transport};
    let (srv, pki, sink) = submission_server();
    let params = || {
        TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap())
            .build_rustls()
            .unwrap()
    };
    for (addr, tls, mechanism, subject) in [
        (
            srv.addrs[1],
            Tls::Required(params()),
            Mechanism::Plain,
            "lettre plain",
        ),
        (
            srv.addrs[2],
            Tls::Wrapper(params()),
            Mechanism::Login,
            "lettre login",
        ),
    ] {
        let email = Message::builder()
            .from("printer@test.example".parse().unwrap())
            .to("alice@test.example".parse().unwrap())
            .to(REMOTE.parse().unwrap())
            .subject(subject)
            .body("authenticated\r\n".to_string())
            .unwrap();
        SmtpTransport::builder_dangerous("localhost")
            .port(addr.port())
            .tls(tls)
            .credentials(Credentials::new("printer".into(), PRINTER.into()))
            .authentication(vec![mechanism])
            .timeout(Some(Duration::from_secs(20)))
            .build()
            .send(&email)
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
        assert!(received(&srv, subject).contains("with ESMTPSA"));
    }
    relayed(&sink, 2);
}

#[test]
fn msmtp_with_a_password() {
    if !tool("msmtp") {
        return;
    }
    let (srv, pki, sink) = submission_server();
    let rc = srv.dir.path().join("msmtprc");
    std::fs::write(
        &rc,
        format!(
            "account box\nhost localhost\nport {}\ntls on\ntls_starttls on\ntls_trust_file {}\n\
             auth plain\nuser printer\npassword {PRINTER}\nfrom printer@test.example\n",
            srv.addrs[1].port(),
            pki.ca.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = Command::new("msmtp")
        .arg("-C")
        .arg(&rc)
        .args(["-a", "box", "alice@test.example", REMOTE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: msmtp\r\n\r\nhi\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(received(&srv, "msmtp").contains("with ESMTPSA"));
    relayed(&sink, 1);
}

#[test]
fn what_is_refused_and_how() {
    // More failures than the five a client address may make by default.
    let (srv, pki, _sink) = submission_server_with("max_failures = 50");
    let script = r#"
smtp_port, port = first, second
def check(got, code, text=""):
    assert got[0] == code and text.encode() in got[1], (code, text, got)

# Port 25: no AUTH, before or after STARTTLS.
with smtplib.SMTP("localhost", smtp_port, timeout=20) as s:
    s.starttls(context=ctx)
    s.ehlo("py.client.example")
    assert not s.has_extn("auth"), s.esmtp_features
    check(s.docmd("AUTH", "PLAIN " + b64("\0printer\0" + password)), 502)
    # And no relaying for those who did not log in, though there is a relay.
    check(s.docmd("MAIL", "FROM:<printer@test.example>"), 250)
    check(s.docmd("RCPT", "TO:<friend@elsewhere.example>"), 550, "5.7.1")

with smtplib.SMTP("localhost", port, timeout=20) as s:
    s.ehlo("py.client.example")
    assert not s.has_extn("auth"), s.esmtp_features
    # Before TLS: 538, and no mail without AUTH.
    check(s.docmd("AUTH", "PLAIN " + b64("\0printer\0" + password)), 538, "5.7.11")
    s.starttls(context=ctx)
    s.ehlo("py.client.example")
    check(s.docmd("MAIL", "FROM:<printer@test.example>"), 530, "5.7.0 Authentication required")
    check(s.docmd("AUTH", "PLAIN !!!notbase64"), 501, "5.5.2")
    check(s.docmd("AUTH", "LOGIN"), 334, "VXNlcm5hbWU6")
    check(s.docmd("*"), 501, "5.0.0")
    check(s.docmd("AUTH", "CRAM-MD5"), 504, "5.5.4")
    check(s.docmd("AUTH", "PLAIN " + b64("ceo\0printer\0" + password)), 535, "5.7.8")
    # A wrong password, then an unknown login: the same 535.
    check(s.docmd("AUTH", "PLAIN " + b64("\0printer\0wrong")), 535, "5.7.8 Authentication credentials invalid")
    check(s.docmd("AUTH", "PLAIN " + b64("\0ghost\0" + password)), 535, "5.7.8 Authentication credentials invalid")
    # The third failure ends the session.
    check(s.docmd("AUTH", "PLAIN " + b64("\0printer\0nope")), 421, "4.7.0")
    try:
        s.noop()
        raise SystemExit("the session went on after three failures")
    except smtplib.SMTPServerDisconnected:
        pass

# smtplib's own login with a wrong password (it tries PLAIN, then LOGIN).
with smtplib.SMTP("localhost", port, timeout=20) as s:
    s.starttls(context=ctx)
    s.ehlo("py.client.example")
    try:
        s.login("printer", "wrong")
        raise SystemExit("a wrong password was taken")
    except smtplib.SMTPAuthenticationError as e:
        assert e.smtp_code == 535, e

# A good login after failures in another session; then AUTH again is 503.
with smtplib.SMTP("localhost", port, timeout=20) as s:
    s.starttls(context=ctx)
    s.ehlo("py.client.example")
    s.login("printer", password)
    check(s.docmd("AUTH", "PLAIN " + b64("\0printer\0" + password)), 503)
    # RFC 4954 5's MAIL parameter, as relaying servers send it.
    check(s.docmd("MAIL", "FROM:<printer@test.example> AUTH=<>"), 250)
"#;
    python(
        &srv,
        &pki,
        script,
        [srv.addrs[0].port(), srv.addrs[1].port()],
    );
    let log = srv.log();
    assert!(log.contains("AUTH failed for login \"printer\""), "{log}");
    assert!(log.contains("AUTH failed for login \"ghost\""), "{log}");
    assert!(!log.contains(PRINTER) && !log.contains("wrong"), "{log}");
}

#[test]
fn a_listener_offering_auth_needs_the_users_file_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let auth_listener = "listen = [{ address = \"127.0.0.1:0\", auth = true }]";
    let no_auth =
        base_config(dir.path(), "", "", "").replace("listen = [\"127.0.0.1:0\"]", auth_listener);
    let path = dir.path().join("a.toml");
    // What --check-config says of this text, which it must refuse.
    let refused = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .arg("--check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let text = refused(&no_auth);
    assert!(
        text.contains("offers AUTH: give an [auth] section"),
        "{text}"
    );

    let users = dir.path().join("users");
    std::fs::write(&users, "").unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
    let with_auth = base_config(
        dir.path(),
        "",
        "",
        &format!("[auth]\nusers = \"{}\"", users.display()),
    )
    .replace("listen = [\"127.0.0.1:0\"]", auth_listener);
    let text = refused(&with_auth);
    assert!(text.contains("only ever offered over TLS"), "{text}");

    // With TLS: a users file others may read is refused; an empty one,
    // and senders for a login it lacks, are findings.
    let pki = make_pki(dir.path(), "check");
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        pki.cert.display(),
        pki.key.display()
    );
    let complete = with_auth.replace("[auth]", &format!("{tls}[auth]"));
    let text = refused(&complete);
    assert!(text.contains("may be read by others"), "{text}");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &path,
        format!("{complete}\n[auth.senders]\nghost = [\"@test.example\"]\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("has no logins, so nobody can use AUTH"),
        "{text}"
    );
    assert!(text.contains("auth.senders.ghost: "), "{text}");
}

#[test]
fn a_login_sends_as_itself_or_as_its_named_addresses_only() {
    let (srv, pki, _sink) = submission_server_with(
        "[auth.senders]\nnas = [\"backup@test.example\", \"@nas.test.example\"]",
    );
    let script = r#"
port, tls_port = first, second
def mail(login, pw, sender):
    with smtplib.SMTP_SSL("localhost", tls_port, context=ctx, timeout=20) as s:
        s.login(login, pw)
        code, text = s.mail(sender)
        return code, text.decode()
assert mail("printer", password, "printer@test.example")[0] == 250
assert mail("printer", password, "PRINTER@TEST.EXAMPLE")[0] == 250
assert mail("printer", password, "")[0] == 250
code, text = mail("printer", password, "ceo@test.example")
assert code == 553 and text == "5.7.1 <ceo@test.example>: Sender address rejected: not owned by user printer", (code, text)
assert mail("printer", password, "printer@elsewhere.example")[0] == 553
assert mail("nas", "disk:full", "backup@test.example")[0] == 250
assert mail("nas", "disk:full", "alerts@nas.test.example")[0] == 250
assert mail("nas", "disk:full", "nas@test.example")[0] == 553
"#;
    python(
        &srv,
        &pki,
        script,
        [srv.addrs[1].port(), srv.addrs[2].port()],
    );
    assert!(
        srv.log()
            .contains("login printer may not send as <ceo@test.example>"),
        "{}",
        srv.log()
    );
}

#[test]
fn an_address_that_fails_too_often_is_refused_at_connect_for_a_while() {
    let (srv, pki, _sink) = submission_server_with("max_failures = 2\nfailure_window = 3");
    let script = r#"
port, tls_port = first, second
with smtplib.SMTP_SSL("localhost", tls_port, context=ctx, timeout=20) as s:
    s.ehlo("py.client.example")
    for _ in range(2):
        code, _ = s.docmd("AUTH", "PLAIN AHByaW50ZXIAd3Jvbmc=")
        assert code == 535, code
# Refused at connect, on every listener, port 25 too.
for p in (port, tls_port):
    try:
        with smtplib.SMTP("localhost", p, timeout=20) as s:
            raise SystemExit("connected")
    except smtplib.SMTPConnectError as e:
        assert e.smtp_code == 421 and b"4.7.0" in e.smtp_error, e
    except (ConnectionResetError, ssl.SSLError, smtplib.SMTPServerDisconnected):
        # The implicit TLS port closes without a word.
        assert p == tls_port
"#;
    python(
        &srv,
        &pki,
        script,
        [srv.addrs[0].port(), srv.addrs[2].port()],
    );
    assert_eq!(
        srv.log()
            .matches("refusing 127.0.0.1 for a while: 2 failed AUTH attempts within 3 s")
            .count(),
        1,
        "{}",
        srv.log()
    );
    // Once the failures age out of the window, the address is welcome
    // again, and the right password works.
    let again = r#"
port, tls_port = first, second
for _ in range(100):
    try:
        with smtplib.SMTP_SSL("localhost", tls_port, context=ctx, timeout=20) as s:
            s.login("printer", password)
            sys.exit(0)
    except (ConnectionResetError, ssl.SSLError, smtplib.SMTPServerDisconnected):
        time.sleep(0.1)
sys.exit("still refused after 10 s")
"#;
    python(
        &srv,
        &pki,
        again,
        [srv.addrs[0].port(), srv.addrs[2].port()],
    );
}

/// Whether `login` with `password` gets 235 on the implicit TLS port.
fn logs_in(srv: &Server, pki: &Pki, login: &str, password: &str) -> bool {
    let script = format!(
        r#"
with smtplib.SMTP_SSL("localhost", second, context=ctx, timeout=20) as s:
    try:
        s.login({login:?}, {password:?})
    except smtplib.SMTPAuthenticationError:
        sys.exit(0)
print("in")
"#
    );
    python(srv, pki, &script, [0, srv.addrs[2].port()]).trim() == "in"
}

#[test]
fn mailroom_passwd_adds_and_changes_logins_and_the_daemon_takes_them() {
    let (srv, pki, _sink) = submission_server();
    let users = srv.dir.path().join("users");
    let passwd = |login: &str, input: &[u8]| {
        let mut cmd = local_command(&["passwd", "-C"]);
        cmd.arg(&srv.config_path).arg(login);
        run_command(&mut cmd, input)
    };
    let reloads = || srv.log().matches("configuration reloaded").count();

    // A new login, its password from a script's standard input.
    let r = passwd("scanner", b"paper jam\n");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("scanner added in"), "{}", r.stdout);
    let mode = std::fs::metadata(&users).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.starts_with("# devices\nprinter:$argon2id$"), "{text}");
    assert!(text.contains("\nscanner:$argon2id$v=19$"), "{text}");
    assert!(srv.wait_log("configuration reloaded"), "{}", srv.log());
    assert!(logs_in(&srv, &pki, "scanner", "paper jam"));

    // A changed password: the old one no longer works.
    let r = passwd("printer", b"new ink\r\n");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("printer updated in"), "{}", r.stdout);
    assert!(within_10s(|| reloads() >= 2), "{}", srv.log());
    assert!(!logs_in(&srv, &pki, "printer", PRINTER));
    assert!(logs_in(&srv, &pki, "printer", "new ink"));
    assert!(logs_in(&srv, &pki, "nas", NAS));

    // What is refused, with the file left as it was.
    let before = std::fs::read_to_string(&users).unwrap();
    for (login, input, code) in [
        ("scanner", &b"\n"[..], 65),
        ("scan:ner", &b"pw\n"[..], 64),
        ("-x", &b"pw\n"[..], 64),
    ] {
        let r = passwd(login, input);
        assert_eq!(r.code, Some(code), "{login}: {}", r.stderr);
        assert!(r.stderr.starts_with("mailroom passwd: "), "{}", r.stderr);
    }
    assert_eq!(std::fs::read_to_string(&users).unwrap(), before);
    let bare = srv.dir.path().join("bare.toml");
    std::fs::write(&bare, base_config(srv.dir.path(), "", "", "")).unwrap();
    let mut cmd = local_command(&["passwd", "-C"]);
    cmd.arg(&bare).arg("someone");
    let r = run_command(&mut cmd, b"pw\n");
    assert_eq!(r.code, Some(78), "{}", r.stderr);
    assert!(r.stderr.contains("no [auth] section"), "{}", r.stderr);

    // On a terminal it asks twice, and shows neither answer.
    let script = r#"
import os, sys
binary, config = sys.argv[1], sys.argv[2]
pid, fd = os.forkpty()
if pid == 0:
    os.execv(binary, [binary, "passwd", "-C", config, "laptop"])
seen = b""
def until(what):
    global seen
    while what not in seen:
        chunk = os.read(fd, 1024)
        if not chunk:
            raise SystemExit("ended before " + what.decode() + ": " + seen.decode())
        seen += chunk
until(b"Password for laptop: ")
os.write(fd, b"lid closed\n")
until(b"Again: ")
os.write(fd, b"lid closed\n")
until(b"laptop added")
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, seen
assert b"lid closed" not in seen, seen
"#;
    let args = [std::path::Path::new(BIN), srv.config_path.as_path()];
    python_ok(script, &args, "");
    assert!(within_10s(|| logs_in(&srv, &pki, "laptop", "lid closed")));
}
