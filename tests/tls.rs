//! TLS against the real server: STARTTLS (RFC 3207) and implicit TLS
//! (RFC 8314) with real clients (rustls, lettre, openssl s_client, swaks,
//! Python's smtplib, curl), the STARTTLS command injection, garbage, plain
//! and silent handshakes, require_tls, the certificate reloaded on SIGHUP,
//! and start-up errors. Certificates are made at test time with rcgen (and
//! an RSA one with openssl).

mod support;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::pki::{curl_to_alice, make_pki, Pki};
use support::*;

// ---------------------------------------------------------------------
// Certificates and a TLS client
// ---------------------------------------------------------------------

const TLS_BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn client_config(
    ca: &CertificateDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// An SMTP client over TLS (rustls), verifying the server's chain.
struct TlsClient {
    r: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    fn handshake(tcp: TcpStream, config: Arc<ClientConfig>) -> std::io::Result<TlsClient> {
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config, name).unwrap();
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(TlsClient {
            r: BufReader::new(s),
        })
    }

    /// Connects to an implicit TLS port.
    fn implicit(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        TlsClient::handshake(tcp, config).expect("TLS handshake")
    }

    /// Greeting, EHLO, STARTTLS on a plain port, then the handshake.
    fn starttls(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
        let mut c = Client::connect(addr).hello();
        c.expect("STARTTLS", 220);
        TlsClient::handshake(c.stream.try_clone().unwrap(), config).expect("TLS handshake")
    }

    fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let s = self.r.get_mut();
        s.write_all(bytes.as_ref()).unwrap();
        s.flush().unwrap();
    }

    fn reply(&mut self) -> Reply {
        read_reply(&mut self.r).expect("a reply over TLS")
    }

    fn expect(&mut self, line: &str, code: u16) -> Reply {
        self.send(format!("{line}\r\n"));
        let r = self.reply();
        assert_eq!(r.code, code, "{line:?} got {r:?}");
        r
    }

    fn conn(&self) -> &ClientConnection {
        &self.r.get_ref().conn
    }

    fn served_cert(&self) -> CertificateDer<'static> {
        self.conn().peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    /// EHLO, then a message to alice; the final reply's code.
    fn deliver(&mut self, subject: &str) -> u16 {
        let ehlo = self.expect("EHLO tls.client.example", 250);
        assert!(
            !ehlo.lines.iter().any(|l| l == "STARTTLS"),
            "STARTTLS offered again over TLS: {ehlo:?}"
        );
        self.expect("MAIL FROM:<sender@client.example>", 250);
        self.expect("RCPT TO:<alice@test.example>", 250);
        self.expect("DATA", 354);
        self.send(format!("Subject: {subject}\r\n\r\nover TLS\r\n.\r\n"));
        self.reply().code
    }
}

/// A server with TLS: `[tls]` from `pki`, the plain listener first and an
/// implicit TLS listener second (`srv.addrs[1]`).
fn tls_server_with(pki_tag: &str, top: &str, server: &str) -> (Server, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), pki_tag);
    let tables = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"",
        pki.cert.display(),
        pki.key.display()
    );
    let server = format!("smtps = [\"127.0.0.1:0\"]\n{server}");
    let text = base_config(dir.path(), top, &server, &tables);
    (Server::start_config(dir, &text), pki)
}

fn tls_server() -> (Server, Pki) {
    tls_server_with("a", "", "")
}

fn by_subject(srv: &Server, subject: &str) -> Parsed {
    srv.messages("alice")
        .into_iter()
        .map(Parsed::new)
        .find(|p| p.subject().as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("no message {subject:?} for alice"))
}

fn received(p: &Parsed) -> String {
    p.header("Received").expect("a Received field")
}

// ---------------------------------------------------------------------
// STARTTLS and implicit TLS with rustls
// ---------------------------------------------------------------------

#[test]
fn starttls_delivers_and_received_says_esmtps_with_version_and_cipher() {
    let (srv, pki) = tls_server();
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.reply().code, 220);
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    // Arguments, and inside a transaction: refused, session goes on.
    c.expect("STARTTLS now", 501);
    c.expect("MAIL FROM:<a@client.example>", 250);
    c.expect("STARTTLS", 503);
    c.expect("RSET", 250);
    let r = c.expect("STARTTLS", 220);
    assert_eq!(r.lines, ["2.0.0 Ready to start TLS"]);
    let mut t = TlsClient::handshake(
        c.stream.try_clone().unwrap(),
        client_config(&pki.ca_der, TLS_BOTH),
    )
    .expect("handshake, verifying the chain");
    assert_eq!(t.served_cert(), pki.leaf_der);
    // The old state is gone: MAIL needs a new EHLO.
    t.expect("MAIL FROM:<a@client.example>", 503);
    t.expect("STARTTLS", 503);
    assert_eq!(t.deliver("starttls 1.3"), 250);
    let rcv = received(&by_subject(&srv, "starttls 1.3"));
    assert!(rcv.contains("with ESMTPS id "), "{rcv}");
    assert!(
        rcv.contains("(using TLSv1.3 with cipher TLS_AES_")
            || rcv.contains("(using TLSv1.3 with cipher TLS_CHACHA20_"),
        "{rcv}"
    );

    // TLS 1.2 too, with its own cipher suite names.
    let mut t = TlsClient::starttls(
        srv.addr,
        client_config(&pki.ca_der, &[&rustls::version::TLS12]),
    );
    assert_eq!(
        t.conn().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(t.deliver("starttls 1.2"), 250);
    let rcv = received(&by_subject(&srv, "starttls 1.2"));
    assert!(
        rcv.contains("(using TLSv1.2 with cipher TLS_ECDHE_ECDSA_WITH_"),
        "{rcv}"
    );
    assert!(srv.wait_log("TLS established: TLSv1.2"));
}

#[test]
fn implicit_tls_greets_after_the_handshake() {
    let (srv, pki) = tls_server();
    let mut t = TlsClient::implicit(srv.addrs[1], client_config(&pki.ca_der, TLS_BOTH));
    let greeting = t.reply();
    assert_eq!(greeting.code, 220);
    t.expect("STARTTLS", 503);
    assert_eq!(t.deliver("implicit"), 250);
    let rcv = received(&by_subject(&srv, "implicit"));
    assert!(rcv.contains("with ESMTPS id "), "{rcv}");
    t.expect("QUIT", 221);
}

#[test]
fn no_tls_section_offers_no_starttls() {
    let srv = Server::start();
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.reply().code, 220);
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(
        !ehlo.lines.iter().any(|l| l.contains("STARTTLS")),
        "{ehlo:?}"
    );
    c.expect("STARTTLS", 502);
    c.expect("MAIL FROM:<a@client.example>", 250);
}

#[test]
fn an_rsa_key_works_too() {
    if !tool("openssl") {
        return;
    }
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("rsa.pem"), dir.path().join("rsa.key"));
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl made no RSA key");
    let rsa = KeyPair::from_pem(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&rsa, &ca)
        .unwrap();
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    let tables = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    );
    let text = base_config(dir.path(), "", "", &tables);
    let srv = Server::start_config(dir, &text);
    for versions in [TLS_BOTH, &[&rustls::version::TLS12]] {
        let mut t = TlsClient::starttls(srv.addr, client_config(ca.der(), versions));
        assert_eq!(t.deliver("rsa"), 250);
    }
    let last = srv.messages("alice").pop().unwrap();
    let rcv = received(&Parsed::new(last));
    assert!(rcv.contains("TLS_ECDHE_RSA_WITH_"), "{rcv}");
}

// ---------------------------------------------------------------------
// Attacks and broken clients
// ---------------------------------------------------------------------

#[test]
fn commands_pipelined_after_starttls_are_dropped_not_run() {
    let (srv, pki) = tls_server();
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.reply().code, 220);
    c.expect("EHLO client.example", 250);
    // CVE-2011-0411: plaintext commands sent in the same packet as
    // STARTTLS must not be run once TLS is up.
    c.send("STARTTLS\r\nEHLO evil.example\r\nMAIL FROM:<evil@evil.example>\r\nRCPT TO:<alice@test.example>\r\n");
    assert_eq!(c.reply().code, 220);
    let mut t = TlsClient::handshake(
        c.stream.try_clone().unwrap(),
        client_config(&pki.ca_der, TLS_BOTH),
    )
    .expect("TLS handshake");
    assert!(
        srv.wait_log("octets sent before the TLS handshake dropped"),
        "{}",
        srv.log()
    );
    // The first reply over TLS answers our NOOP, not an injected command.
    let r = t.expect("NOOP", 250);
    assert_eq!(r.lines, ["2.0.0 Ok"]);
    t.expect("RCPT TO:<alice@test.example>", 503);
    t.expect("MAIL FROM:<a@client.example>", 503);
    assert_eq!(t.deliver("after injection"), 250);
    assert_eq!(srv.messages("alice").len(), 1);
}

/// The server logs a failed handshake at info level with the client's
/// address, and the connection is closed.
fn assert_handshake_failed(srv: &Server, c: &mut Client) {
    let me = c.stream.local_addr().unwrap();
    // At most a TLS alert, then the end of the stream.
    let mut rest = Vec::new();
    c.stream
        .read_to_end(&mut rest)
        .expect("the connection ends");
    assert!(rest.len() < 64 && !rest.starts_with(b"2"), "{rest:?}");
    assert!(
        srv.wait_log(&format!(
            "INFO  mailroom::server::conn] [{me}]: TLS handshake failed"
        )),
        "{}",
        srv.log()
    );
}

#[test]
fn a_garbage_handshake_ends_only_its_own_connection() {
    let (srv, pki) = tls_server();
    // Another session, in the middle of a transaction meanwhile.
    let mut other = Client::connect(srv.addr).hello();
    other.expect("MAIL FROM:<a@client.example>", 250);
    let mut other_tls = TlsClient::implicit(srv.addrs[1], client_config(&pki.ca_der, TLS_BOTH));
    assert_eq!(other_tls.reply().code, 220);

    let mut c = Client::connect(srv.addr).hello();
    c.expect("STARTTLS", 220);
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_handshake_failed(&srv, &mut c);
    // Application data before any handshake.
    let mut c = Client::connect(srv.addrs[1]);
    c.send(b"\x17\x03\x03\x00\x05hello");
    assert_handshake_failed(&srv, &mut c);

    other.expect("RCPT TO:<alice@test.example>", 250);
    other.expect("DATA", 354);
    other.send("Subject: still here\r\n\r\nyes\r\n.\r\n");
    assert_eq!(other.reply().code, 250);
    assert_eq!(other_tls.deliver("tls still here"), 250);
}

#[test]
fn a_plaintext_client_on_the_tls_port_gets_no_smtp() {
    let (srv, _pki) = tls_server();
    let mut c = Client::connect(srv.addrs[1]);
    c.send("EHLO client.example\r\n");
    let mut got = Vec::new();
    let _ = c.stream.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"220"),
        "plain SMTP on the TLS port: {got:?}"
    );
    assert!(got.len() < 64, "only a TLS alert, if anything: {got:?}");
    let me = c.stream.local_addr().unwrap();
    assert!(
        srv.wait_log(&format!("[{me}]: TLS handshake failed")),
        "{}",
        srv.log()
    );
}

#[test]
fn a_silent_client_cannot_hold_a_handshake_open() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let tables = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[timeouts]\ncommand = 1",
        pki.cert.display(),
        pki.key.display()
    );
    let text = base_config(dir.path(), "", "smtps = [\"127.0.0.1:0\"]", &tables);
    let srv = Server::start_config(dir, &text);
    for addr in [srv.addr, srv.addrs[1]] {
        let started = Instant::now();
        let mut c = Client::connect(addr);
        if addr == srv.addr {
            assert_eq!(c.reply().code, 220);
            c.expect("STARTTLS", 220);
        }
        // Half a ClientHello record header, then nothing.
        c.send(b"\x16\x03");
        assert_handshake_failed(&srv, &mut c);
        assert!(started.elapsed() < Duration::from_secs(15));
    }
}

#[test]
fn old_protocol_versions_are_refused() {
    if !tool("openssl") {
        return;
    }
    let (srv, _pki) = tls_server();
    for version in ["-tls1", "-tls1_1"] {
        let out = Command::new("openssl")
            .args([
                "s_client",
                version,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
                "-connect",
            ])
            .arg(srv.addrs[1].to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{version} was accepted");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("220 "), "{version}: {text}");
    }
    assert!(srv.wait_log("TLS handshake failed"));
}

// ---------------------------------------------------------------------
// require_tls
// ---------------------------------------------------------------------

#[test]
fn require_tls_refuses_mail_before_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let tables = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"",
        pki.cert.display(),
        pki.key.display()
    );
    let mut text = base_config(dir.path(), "", "", &tables);
    text = text.replace(
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1:0\", { address = \"127.0.0.1:0\", require_tls = true }]",
    );
    let srv = Server::start_config(dir, &text);
    // The first listener does not require TLS.
    let mut c = Client::connect(srv.addrs[0]).hello();
    c.expect("MAIL FROM:<a@client.example>", 250);
    let mut c = Client::connect(srv.addrs[1]).hello();
    let r = c.expect("MAIL FROM:<a@client.example>", 530);
    assert_eq!(r.lines, ["5.7.0 Must issue a STARTTLS command first"]);
    c.expect("RCPT TO:<alice@test.example>", 530);
    c.expect("NOOP", 250);
    c.expect("STARTTLS", 220);
    let mut t = TlsClient::handshake(
        c.stream.try_clone().unwrap(),
        client_config(&pki.ca_der, TLS_BOTH),
    )
    .unwrap();
    assert_eq!(t.deliver("required"), 250);
}

// ---------------------------------------------------------------------
// Reload and start-up errors
// ---------------------------------------------------------------------

#[test]
fn sighup_reloads_the_certificate_for_new_sessions_only() {
    // Five sessions at once from one address.
    let (srv, a) = tls_server_with("a", "", "max_connections_per_ip = 8");
    let config_a = client_config(&a.ca_der, TLS_BOTH);
    let mut old = TlsClient::implicit(srv.addrs[1], config_a.clone());
    assert_eq!(old.reply().code, 220);
    assert_eq!(old.served_cert(), a.leaf_der);

    // A renewed certificate (another CA, even) written over the files.
    let b = make_pki(srv.dir.path(), "b");
    std::fs::copy(&b.cert, &a.cert).unwrap();
    std::fs::copy(&b.key, &a.key).unwrap();
    srv.signal("HUP");
    assert!(srv.wait_log("configuration reloaded"), "{}", srv.log());
    let config_b = client_config(&b.ca_der, TLS_BOTH);
    let mut new = TlsClient::implicit(srv.addrs[1], config_b.clone());
    assert_eq!(new.reply().code, 220);
    assert_eq!(new.served_cert(), b.leaf_der);
    let s = TlsClient::starttls(srv.addr, config_b.clone());
    assert_eq!(s.served_cert(), b.leaf_der);
    // The session from before goes on with its own.
    assert_eq!(old.deliver("old session"), 250);
    assert_eq!(new.deliver("new session"), 250);

    // A broken pair is logged, naming the file, and the last good one kept.
    std::fs::write(
        &a.key,
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    srv.signal("HUP");
    assert!(srv.wait_log("reload failed"), "{}", srv.log());
    assert!(srv.wait_log(&a.key.display().to_string()), "{}", srv.log());
    let mut t = TlsClient::implicit(srv.addrs[1], config_b);
    assert_eq!(t.reply().code, 220);
    assert_eq!(t.served_cert(), b.leaf_der);
    // A key that does not belong to the certificate is refused too.
    std::fs::copy(&b.key, &a.key).unwrap();
    std::fs::copy(&make_pki(srv.dir.path(), "c").cert, &a.cert).unwrap();
    srv.signal("HUP");
    assert!(
        srv.wait_log("is not the key of the certificate"),
        "{}",
        srv.log()
    );
    let t = TlsClient::implicit(srv.addrs[1], client_config(&b.ca_der, TLS_BOTH));
    assert_eq!(t.served_cert(), b.leaf_der);
    assert!(!srv.log().contains("tls.cert:"), "{}", srv.log());
}

#[test]
fn an_expired_certificate_is_served_and_logged_at_start_and_reload() {
    use rcgen::{CertificateParams, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("old.pem"), dir.path().join("old.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let tables = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert_path.display(),
        key_path.display()
    );
    let text = base_config(dir.path(), "", "", &tables);
    let srv = Server::start_config(dir, &text);
    let warning = format!(
        "tls.cert: {}: the certificate expired on Fri, 1 Jan 2021",
        cert_path.display()
    );
    assert!(srv.wait_log(&warning), "{}", srv.log());

    // Still offered and served: an opportunistic client may not check.
    let mut c = Client::connect(srv.addr);
    assert_eq!(c.reply().code, 220);
    let ehlo = c.expect("EHLO client.example", 250);
    assert!(
        ehlo.lines.iter().any(|l| l.contains("STARTTLS")),
        "{ehlo:?}"
    );
    c.expect("STARTTLS", 220);
    if tool("openssl") {
        // The handshake completes with that certificate, which the client
        // finds expired.
        let (out, err) = openssl_starttls(srv.addr, &cert_path, &[], b"QUIT\r\n");
        assert!(
            out.contains("Verify return code: 10 (certificate has expired)"),
            "{out}\n{err}"
        );
    }

    srv.signal("HUP");
    assert!(srv.wait_log("configuration reloaded"), "{}", srv.log());
    assert_eq!(srv.log().matches(&warning).count(), 2, "{}", srv.log());
}

/// Runs `mailroom --config` on a file expected to be refused; its stderr.
fn refused_at_start(dir: &Path, text: &str) -> String {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let run = run_bin(
        &["--config".as_ref(), path.as_os_str()],
        dir,
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(78), "{}", run.stderr);
    run.stderr
}

#[test]
fn unusable_certificates_and_keys_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = make_pki(d, "a");
    let b = make_pki(d, "b");
    let missing = d.join("missing.pem");
    let not_pem = d.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let cases = [
        (&missing, &a.key, missing.display().to_string()),
        (&a.cert, &missing, missing.display().to_string()),
        (&not_pem, &a.key, not_pem.display().to_string()),
        (&a.cert, &not_pem, not_pem.display().to_string()),
        (&a.cert, &b.key, a.cert.display().to_string()),
    ];
    for (cert, key, named) in cases {
        let tables = format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"",
            cert.display(),
            key.display()
        );
        let err = refused_at_start(d, &base_config(d, "", "", &tables));
        assert!(err.contains(&named), "{named}: {err}");
    }
    // TLS listeners without [tls].
    let err = refused_at_start(d, &base_config(d, "", "smtps = [\"127.0.0.1:0\"]", ""));
    assert!(err.contains("server.smtps"), "{err}");
}

// ---------------------------------------------------------------------
// Other clients
// ---------------------------------------------------------------------

#[test]
fn lettre_starttls_and_implicit_tls() {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{Message, SmtpTransport, Transport};
    let (srv, pki) = tls_server();
    let params = || {
        TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap())
            .build_rustls()
            .unwrap()
    };
    for (addr, tls, subject) in [
        (srv.addrs[0], Tls::Required(params()), "lettre starttls"),
        (srv.addrs[1], Tls::Wrapper(params()), "lettre wrapper"),
    ] {
        let email = Message::builder()
            .from("sender@client.example".parse().unwrap())
            .to("alice@test.example".parse().unwrap())
            .subject(subject)
            .body("over TLS\r\n".to_string())
            .unwrap();
        SmtpTransport::builder_dangerous("localhost")
            .port(addr.port())
            .tls(tls)
            .timeout(Some(Duration::from_secs(20)))
            .build()
            .send(&email)
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
        assert!(received(&by_subject(&srv, subject)).contains("with ESMTPS"));
    }
}

/// Runs `openssl s_client -starttls smtp` against `addr`, trusting `ca`,
/// with `input` on its standard input; its stdout and stderr.
fn openssl_starttls(addr: SocketAddr, ca: &Path, args: &[&str], input: &[u8]) -> (String, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-starttls", "smtp"])
        .args(args)
        .arg("-CAfile")
        .arg(ca)
        .arg("-connect")
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn openssl_s_client_starttls() {
    if !tool("openssl") {
        return;
    }
    let (srv, pki) = tls_server();
    let (text, err) = openssl_starttls(
        srv.addr,
        &pki.ca,
        &["-quiet", "-verify_return_error", "-verify_hostname", "localhost"],
        b"EHLO openssl.client.example\r\nMAIL FROM:<s@client.example>\r\nRCPT TO:<alice@test.example>\r\nDATA\r\nSubject: openssl\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(text.contains("250 2.0.0 Ok: queued as"), "{text}\n{err}");
    assert!(!text.contains("STARTTLS"), "offered again: {text}");
    assert!(received(&by_subject(&srv, "openssl")).contains("with ESMTPS"));
}

#[test]
fn swaks_tls_and_tls_on_connect() {
    if !tool("swaks") {
        return;
    }
    let (srv, pki) = tls_server();
    for (flag, addr, subject) in [
        ("--tls", srv.addrs[0], "swaks tls"),
        ("--tls-on-connect", srv.addrs[1], "swaks tlsc"),
    ] {
        let out = Command::new("swaks")
            .args([
                "--to",
                "alice@test.example",
                "--from",
                "s@client.example",
                "--header",
                &format!("Subject: {subject}"),
            ])
            .args([
                "--server",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
                flag,
            ])
            .args(["--tls-verify", "--tls-ca-path"])
            .arg(&pki.ca)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "swaks {flag}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            received(&by_subject(&srv, subject)).contains("with ESMTPS"),
            "{text}"
        );
    }
}

#[test]
fn python_smtplib_starttls_and_smtp_ssl() {
    let (srv, pki) = tls_server();
    let script = r#"
import smtplib, ssl, sys
ca, port, tls_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
with smtplib.SMTP("localhost", port, timeout=20) as s:
    s.ehlo("py.client.example")
    assert s.has_extn("starttls")
    s.starttls(context=ctx)
    s.ehlo("py.client.example")
    assert not s.has_extn("starttls")
    s.sendmail("s@client.example", ["alice@test.example"], "Subject: python starttls\r\n\r\nhi\r\n")
with smtplib.SMTP_SSL("localhost", tls_port, context=ctx, timeout=20) as s:
    s.sendmail("s@client.example", ["alice@test.example"], "Subject: python smtp_ssl\r\n\r\nhi\r\n")
"#;
    let args = [
        pki.ca.display().to_string(),
        srv.addrs[0].port().to_string(),
        srv.addrs[1].port().to_string(),
    ];
    python_ok(script, &args, "");
    for subject in ["python starttls", "python smtp_ssl"] {
        assert!(received(&by_subject(&srv, subject)).contains("with ESMTPS"));
    }
}

#[test]
fn curl_ssl_reqd_and_smtps() {
    if !tool("curl") {
        return;
    }
    let (srv, pki) = tls_server();
    for (url, subject) in [
        (
            format!("smtp://127.0.0.1:{}", srv.addrs[0].port()),
            "curl ssl-reqd",
        ),
        (
            format!("smtps://127.0.0.1:{}", srv.addrs[1].port()),
            "curl smtps",
        ),
    ] {
        curl_to_alice(
            srv.dir.path(),
            &url,
            &pki.ca,
            &[],
            "s@client.example",
            subject,
        );
        assert!(received(&by_subject(&srv, subject)).contains("with ESMTPS"));
    }
}

#[test]
fn sigterm_says_421_over_tls_to_an_idle_session() {
    let (mut srv, pki) = tls_server();
    let config = client_config(&pki.ca_der, TLS_BOTH);
    let mut implicit = TlsClient::implicit(srv.addrs[1], config.clone());
    assert_eq!(implicit.reply().code, 220);
    let mut upgraded = TlsClient::starttls(srv.addr, config);
    upgraded.expect("EHLO tls.client.example", 250);
    srv.signal("TERM");
    for t in [&mut implicit, &mut upgraded] {
        let r = t.reply();
        assert_eq!(
            (r.code, r.lines[0].starts_with("4.3.0 ")),
            (421, true),
            "{r:?}"
        );
    }
    assert_eq!(srv.wait_exit(Duration::from_secs(20)), Some(0));
}

/// A server whose command timeout is `secs`, with TLS.
fn tls_server_timing_out_after(secs: u32) -> (Server, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let tables = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[timeouts]\ncommand = {secs}",
        pki.cert.display(),
        pki.key.display()
    );
    let text = base_config(dir.path(), "", "smtps = [\"127.0.0.1:0\"]", &tables);
    (Server::start_config(dir, &text), pki)
}

/// Sends `bytes` one octet every 250 ms, for at most `limit`; how long
/// until the server stopped taking them.
fn drip(tcp: &mut TcpStream, bytes: &[u8], limit: Duration) -> Duration {
    let started = Instant::now();
    for b in bytes {
        if started.elapsed() > limit || tcp.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    started.elapsed()
}

#[test]
fn a_client_that_drips_its_hello_is_cut_off_at_the_command_timeout() {
    let (srv, pki) = tls_server_timing_out_after(2);
    for addr in [srv.addr, srv.addrs[1]] {
        let mut c = Client::connect(addr);
        if addr == srv.addr {
            assert_eq!(c.reply().code, 220);
            c.expect("STARTTLS", 220);
        }
        // A real ClientHello, one octet at a time: each read is quick, the
        // whole handshake is not.
        let config = client_config(&pki.ca_der, TLS_BOTH);
        let mut hello =
            ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut bytes = Vec::new();
        hello.write_tls(&mut bytes).unwrap();
        assert!(bytes.len() > 40);
        let started = Instant::now();
        drip(&mut c.stream, &bytes, Duration::from_secs(8));
        assert_handshake_failed(&srv, &mut c);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(
        srv.wait_log("TLS handshake failed: timed out"),
        "{}",
        srv.log()
    );
}

#[test]
fn a_client_that_drips_a_record_after_the_handshake_times_out() {
    let (srv, pki) = tls_server_timing_out_after(2);
    let mut t = TlsClient::implicit(srv.addrs[1], client_config(&pki.ca_der, TLS_BOTH));
    assert_eq!(t.reply().code, 220);
    let s = t.r.get_mut();
    s.conn.writer().write_all(b"NOOP\r\n").unwrap();
    let mut record = Vec::new();
    while s.conn.wants_write() {
        s.conn.write_tls(&mut record).unwrap();
    }
    let started = Instant::now();
    drip(&mut s.sock, &record, Duration::from_secs(8));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let r = t.reply();
    assert_eq!(
        (r.code, r.lines[0].starts_with("4.4.2 ")),
        (421, true),
        "{r:?}"
    );
}

#[test]
fn the_session_ends_with_close_notify() {
    let (srv, pki) = tls_server();
    let mut t = TlsClient::implicit(srv.addrs[1], client_config(&pki.ca_der, TLS_BOTH));
    assert_eq!(t.reply().code, 220);
    t.expect("QUIT", 221);
    // rustls reports a close without close_notify as UnexpectedEof.
    let mut rest = Vec::new();
    let end = t.r.read_to_end(&mut rest);
    assert!(end.is_ok(), "{end:?}");
    assert!(rest.is_empty());
}

#[test]
fn a_reload_cannot_take_tls_from_listeners_that_need_it() {
    let (srv, pki) = tls_server();
    let text = std::fs::read_to_string(&srv.config_path).unwrap();
    let without = text.replace("smtps = [\"127.0.0.1:0\"]\n", "").replace(
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"",
            pki.cert.display(),
            pki.key.display()
        ),
        "",
    );
    assert!(!without.contains("[tls]") && !without.contains("smtps"));
    std::fs::write(&srv.config_path, without).unwrap();
    srv.signal("HUP");
    assert!(srv.wait_log("reload failed"), "{}", srv.log());
    assert!(srv.wait_log("needs it until a restart"), "{}", srv.log());
    let mut t = TlsClient::implicit(srv.addrs[1], client_config(&pki.ca_der, TLS_BOTH));
    assert_eq!(t.reply().code, 220);
    let _ = TlsClient::starttls(srv.addr, client_config(&pki.ca_der, TLS_BOTH));
}

#[test]
fn part_of_a_tls_record_does_not_hold_a_worker() {
    let (srv, a) = tls_server_with("a", "", "workers = 1\nmax_connections_per_ip = 10");
    let mut t = TlsClient::implicit(srv.addrs[1], client_config(&a.ca_der, TLS_BOTH));
    assert_eq!(t.reply().code, 220);
    // A record header that promises 64 octets, and 3 of them.
    t.r.get_mut()
        .sock
        .write_all(&[0x17, 0x03, 0x03, 0x00, 0x40, 1, 2, 3])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The only worker is free for others meanwhile.
    let start = std::time::Instant::now();
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "x@remote.example",
        &["alice@test.example"],
        "Subject: past part of a record\r\n\r\nhi\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn clients_that_vanish_at_every_step_leave_nothing_behind() {
    let (srv, a) = tls_server_with("a", "", "workers = 2\nmax_connections_per_ip = 100");
    let config = client_config(&a.ca_der, TLS_BOTH);
    // One whole delivery first, so that what the server opens once is
    // open.
    let mut c = srv.connect().hello();
    assert_eq!(
        c.send_mail(
            "x@remote.example",
            &["alice@test.example"],
            "Subject: first\r\n\r\nhi\r\n"
        )
        .code,
        250
    );
    c.expect("QUIT", 221);
    let pid = srv.pid();
    let settled = || (open_descriptors(pid), threads(pid));
    std::thread::sleep(Duration::from_millis(300));
    let before = settled();
    let big = "x".repeat(100_000);
    let steps: Vec<(&str, Vec<String>)> = vec![
        ("at the greeting", vec![]),
        ("after EHLO", vec!["EHLO c.example".into()]),
        (
            "after MAIL",
            vec![
                "EHLO c.example".into(),
                "MAIL FROM:<x@remote.example>".into(),
            ],
        ),
        (
            "after RCPT",
            vec![
                "EHLO c.example".into(),
                "MAIL FROM:<x@remote.example>".into(),
                "RCPT TO:<alice@test.example>".into(),
            ],
        ),
        (
            "inside DATA",
            vec![
                "EHLO c.example".into(),
                "MAIL FROM:<x@remote.example>".into(),
                "RCPT TO:<alice@test.example>".into(),
                "DATA".into(),
                format!("Subject: cut\r\n\r\n{big}"),
            ],
        ),
        (
            "inside BDAT",
            vec![
                "EHLO c.example".into(),
                "MAIL FROM:<x@remote.example>".into(),
                "RCPT TO:<alice@test.example>".into(),
                format!("BDAT 400000\r\nSubject: cut\r\n\r\n{big}"),
            ],
        ),
        (
            "after STARTTLS",
            vec!["EHLO c.example".into(), "STARTTLS".into()],
        ),
    ];
    for (what, lines) in &steps {
        for _ in 0..5 {
            let mut s = TcpStream::connect(srv.addr).unwrap();
            for l in lines {
                s.write_all(format!("{l}\r\n").as_bytes()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
            drop(s);
        }
        let _ = what;
    }
    // Halfway through a TLS handshake: part of a ClientHello.
    for _ in 0..5 {
        let mut s = TcpStream::connect(srv.addrs[1]).unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(s);
    }
    // And a whole handshake, then nothing.
    for _ in 0..5 {
        let t = TlsClient::implicit(srv.addrs[1], config.clone());
        drop(t);
    }
    let after = wait_for("the descriptors and threads to come back", || {
        let now = settled();
        (now == before).then_some(now)
    });
    assert_eq!(after, before);
    // Nothing half-received was delivered, and nothing is left in the
    // spool.
    assert_eq!(srv.messages("alice").len(), 1);
    let spool: Vec<_> = std::fs::read_dir(srv.dir.path().join("spool"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        spool
            .iter()
            .all(|n| n.to_string_lossy().starts_with('.') || n == "journal"),
        "{spool:?}"
    );
    eprintln!(
        "figure: 45 clients vanished at every step; descriptors and threads back to {before:?}"
    );
}

#[test]
fn sessions_resume_over_tls_1_3_and_1_2() {
    let (srv, a) = tls_server();
    for (name, versions) in [
        ("TLS 1.3", &[&rustls::version::TLS13][..]),
        ("TLS 1.2", &[&rustls::version::TLS12][..]),
    ] {
        // One client configuration: its session cache is what resumes.
        let config = client_config(&a.ca_der, versions);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut t = TlsClient::implicit(srv.addrs[1], config.clone());
            assert_eq!(t.reply().code, 220);
            kinds.push(t.r.get_ref().conn.handshake_kind());
            t.r.get_mut().conn.send_close_notify();
            let _ = t.r.get_mut().flush();
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ],
            "{name}"
        );
    }
}

/// `openssl s_client` on the implicit TLS port; its output.
fn s_client(srv: &Server, args: &[&str]) -> String {
    let port = srv.addrs[1].port();
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    child.stdin.take().unwrap().write_all(b"QUIT\r\n").unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn openssl_sees_tickets_resumption_and_the_servers_cipher_order() {
    if !tool("openssl") {
        return;
    }
    let (srv, _a) = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let sess = dir.path().join("session");
    let sess = sess.to_str().unwrap();
    // TLS 1.2 session tickets, and a session that resumes from one.
    let first = s_client(&srv, &["-tls1_2", "-sess_out", sess]);
    assert!(
        first.contains("TLS session ticket lifetime hint"),
        "{first}"
    );
    let again = s_client(&srv, &["-tls1_2", "-sess_in", sess]);
    assert!(again.contains("Reused, TLSv1.2"), "{again}");
    // And from a session ID, without tickets.
    let first = s_client(&srv, &["-tls1_2", "-no_ticket", "-sess_out", sess]);
    assert!(first.contains("New, TLSv1.2"), "{first}");
    let again = s_client(&srv, &["-tls1_2", "-no_ticket", "-sess_in", sess]);
    assert!(again.contains("Reused, TLSv1.2"), "{again}");
    // A client that prefers the weaker suite gets the server's choice.
    let chosen = s_client(
        &srv,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384",
        ],
    );
    assert!(chosen.contains("Cipher is ECDHE-"), "{chosen}");
    assert!(chosen.contains("AES256-GCM-SHA384"), "{chosen}");
}
