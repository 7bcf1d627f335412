//! Local delivery against the real server: mbox mailboxes, aliases (chains,
//! loops, includes, files, pipes, remote targets, lists), duplicates, and
//! VRFY/EXPN from the same resolver.

mod support;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::*;

/// A server whose aliases file holds `aliases` ({d} stands for the
/// temporary directory) and whose mailbox tables include `tables`.
fn with_aliases(aliases: &str, top: &str, tables: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let path = dir.path().join("aliases");
    std::fs::write(&path, aliases.replace("{d}", &d)).unwrap();
    let top = format!("aliases = \"{}\"\n{top}", path.display());
    let text = base_config(dir.path(), &top, "", &tables.replace("{d}", &d));
    Server::start_config(dir, &text)
}

/// A directory anyone can write to, for files written by pipes (which run
/// as `nobody` when the tests run as root).
fn open_dir(srv: &Server, name: &str) -> PathBuf {
    let p = srv.dir.path().join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut parent = p.parent();
    while let Some(dir) = parent {
        // Let nobody through the temporary directories on the way.
        if dir.starts_with(srv.dir.path()) {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
        }
        parent = dir.parent();
    }
    p
}

fn send(srv: &Server, to: &[&str], subject: &str) -> Reply {
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "sender@remote.example",
        to,
        &format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n"),
    );
    let _ = c.cmd("QUIT");
    r
}

/// Splits an mboxrd file into its messages (without their From lines).
fn mbox_messages(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for part in text
        .split("\n\nFrom ")
        .map(|p| p.trim_start_matches("From "))
    {
        if let Some((_, rest)) = part.split_once('\n') {
            out.push(rest.to_string());
        }
    }
    out
}

#[test]
fn mbox_mailboxes_get_mboxrd() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("carol.mbox");
    let tables = format!("[mailbox.carol]\nmbox = \"{}\"", mbox.display());
    let text = base_config(dir.path(), "", "", &tables);
    let srv = Server::start_config(dir, &text);
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "a@remote.example",
        &["carol@test.example"],
        "Subject: one\r\n\r\nFrom here\r\n>From there\r\n",
    );
    assert_eq!(r.code, 250);
    let r = c.send_mail("", &["carol@test.example"], "Subject: two\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.starts_with("From a@remote.example "), "{text}");
    assert!(
        text.contains("\n>From here\n>>From there\n\nFrom MAILER-DAEMON "),
        "{text}"
    );
    assert!(text.ends_with("\nx\n\n"));
    let msgs = mbox_messages(&mbox);
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].starts_with(
        "Return-Path: <a@remote.example>\nDelivered-To: carol@test.example\nReceived: "
    ));
    let mode = std::fs::metadata(&mbox).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn alias_chains_lists_and_duplicates() {
    let srv = with_aliases(
        "# staff list\nstaff: alice, team\nteam: bob,\n  alice\nowner-staff: alice\nboss: \\alice\nwebmaster: staff\n",
        "",
        "",
    );
    // alice is reached twice (directly and through team): one copy.
    assert_eq!(
        send(
            &srv,
            &["staff@test.example", "alice@test.example"],
            "to staff"
        )
        .code,
        250
    );
    let alice = srv.messages("alice");
    let bob = srv.messages("bob");
    assert_eq!((alice.len(), bob.len()), (1, 1));
    // Members of a list with an owner get the owner as envelope sender.
    let m = Parsed::new(bob[0].clone());
    assert_eq!(
        m.header("Return-Path").as_deref(),
        Some("<owner-staff@test.example>")
    );
    assert_eq!(
        m.header("Delivered-To").as_deref(),
        Some("bob@test.example")
    );
    // Chains work and the header is left alone.
    assert_eq!(
        send(&srv, &["webmaster@test.example"], "via webmaster").code,
        250
    );
    assert_eq!(srv.messages("bob").len(), 2);
    assert_eq!(send(&srv, &["boss@test.example"], "boss").code, 250);
    assert_eq!(srv.messages("alice").len(), 3);
}

#[test]
fn alias_loops_and_remote_targets_are_refused_at_rcpt() {
    let srv = with_aliases(
        "a: b\nb: c\nc: a\nfar: someone@elsewhere.example\nmixed: alice, far\n",
        "",
        "",
    );
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    let r = c.expect("RCPT TO:<a@test.example>", 550);
    assert!(r.text().starts_with("5.4.6"), "{r:?}");
    assert!(r.text().contains("a -> b -> c -> a"), "{r:?}");
    let r = c.expect("RCPT TO:<far@test.example>", 550);
    assert!(
        r.text().starts_with("5.7.1") && r.text().contains("someone@elsewhere.example"),
        "{r:?}"
    );
    c.expect("RCPT TO:<mixed@test.example>", 550);
    c.expect("RCPT TO:<alice@test.example>", 250);
}

#[test]
fn include_lists_and_file_targets() {
    let srv = with_aliases(
        "members: :include:{d}/members.txt\narchive: {d}/archive.mbox\n",
        "",
        "",
    );
    std::fs::write(
        srv.dir.path().join("members.txt"),
        "# the members\nalice, bob\n",
    )
    .unwrap();
    assert_eq!(send(&srv, &["members@test.example"], "included").code, 250);
    assert_eq!(
        (srv.messages("alice").len(), srv.messages("bob").len()),
        (1, 1)
    );
    // A file target is written as an mbox (as `nobody` when we are root,
    // so the directory must let it in).
    open_dir(&srv, "");
    assert_eq!(send(&srv, &["archive@test.example"], "archived").code, 250);
    let archived = mbox_messages(&srv.dir.path().join("archive.mbox"));
    assert_eq!(archived.len(), 1);
    assert!(
        archived[0].contains("Delivered-To: archive@test.example\n"),
        "{archived:?}"
    );
    // An include file that cannot be read is a temporary failure.
    std::fs::remove_file(srv.dir.path().join("members.txt")).unwrap();
    let mut c = srv.connect().hello();
    c.expect("MAIL FROM:<x@remote.example>", 250);
    c.expect("RCPT TO:<members@test.example>", 451);
}

#[test]
fn pipe_targets_and_their_exit_codes() {
    let srv = with_aliases(
        "ok: \"|cat > {d}/out/piped.txt\"\nlater: |exit 75\nnever: \"|echo no such list >&2; exit 1\"\n",
        "",
        "",
    );
    let out = open_dir(&srv, "out");
    assert_eq!(send(&srv, &["ok@test.example"], "piped").code, 250);
    let piped = std::fs::read_to_string(out.join("piped.txt")).unwrap();
    assert!(
        piped.starts_with(
            "Return-Path: <sender@remote.example>\nDelivered-To: ok@test.example\nReceived: "
        ),
        "{piped}"
    );
    assert!(piped.ends_with("\nbody of piped\n"), "{piped}");
    let r = send(&srv, &["later@test.example"], "later");
    assert_eq!(r.code, 451, "{r:?}");
    let r = send(&srv, &["never@test.example"], "never");
    assert_eq!(r.code, 554, "{r:?}");
    assert!(
        srv.log().contains("no such list"),
        "the command's complaint is logged"
    );
    // A temporary pipe failure fails the whole message: alice's copy is
    // not delivered alone, so the client's retry loses nothing.
    let r = send(
        &srv,
        &["alice@test.example", "later@test.example"],
        "together",
    );
    assert_eq!(r.code, 451);
    assert!(srv.messages("alice").is_empty());
}

#[test]
fn pipes_never_run_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let srv = with_aliases("who: \"|id -u > {d}/out/uid.txt\"\n", "", "");
    let out = open_dir(&srv, "out");
    assert_eq!(send(&srv, &["who@test.example"], "who").code, 250);
    let uid = std::fs::read_to_string(out.join("uid.txt")).unwrap();
    assert_ne!(uid.trim(), "0");
    assert_eq!(
        uid.trim(),
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .unwrap()
            .uid
            .to_string()
    );
}

#[test]
fn vrfy_and_expn_answer_from_the_resolver() {
    let srv = with_aliases("staff: alice, bob\n", "vrfy = true\nexpn = true", "");
    let mut c = srv.connect().hello();
    let r = c.expect("EXPN staff", 250);
    assert_eq!(
        r.lines,
        ["2.1.5 <alice@test.example>", "2.1.5 <bob@test.example>"]
    );
    c.expect("VRFY alice", 250);
    c.expect("VRFY nobody-here", 550);
}

#[test]
fn a_bad_aliases_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliases");
    std::fs::write(&path, "ok: alice\nbroken line without colon\n").unwrap();
    let config = dir.path().join("mailroom.toml");
    let top = format!("aliases = \"{}\"", path.display());
    std::fs::write(&config, base_config(dir.path(), &top, "", "")).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");
}
