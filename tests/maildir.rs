//! Maildir delivery against the real server: file names after qmail's
//! convention (`<secs>.M<usecs>P<pid>Q<seq>.<host>,S=<size>`), their mode
//! and owner, and Python's `mailbox` module reading what was delivered,
//! Maildir and mbox alike. Other programs read these mailboxes, so the
//! tests check them as those programs see them.

mod support;
use std::os::unix::fs::PermissionsExt;
use support::*;

#[test]
fn maildir_files_follow_the_qmail_convention() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    assert_eq!(
        c.send_mail(
            "a@remote.example",
            &["alice@test.example"],
            "Subject: name\r\n\r\nx\r\n"
        )
        .code,
        250
    );
    let md = srv.maildir("alice");
    let entry = std::fs::read_dir(md.join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let name = entry.file_name().into_string().unwrap();
    // <secs>.M<usecs>P<pid>Q<seq>.<host>,S=<size>
    let (unique, size) = name.rsplit_once(",S=").unwrap();
    assert_eq!(
        size.parse::<u64>().unwrap(),
        entry.metadata().unwrap().len(),
        "{name}"
    );
    let parts: Vec<&str> = unique.splitn(3, '.').collect();
    assert!(parts[0].parse::<u64>().is_ok(), "{name}");
    let (m, rest) = parts[1].strip_prefix('M').unwrap().split_once('P').unwrap();
    let (p, q) = rest.split_once('Q').unwrap();
    assert!(
        m.parse::<u32>().unwrap() < 1_000_000 && q.parse::<u64>().is_ok(),
        "{name}"
    );
    assert_eq!(p.parse::<u32>().unwrap(), srv.pid());
    assert_eq!(parts[2], "mx.test.example");
    assert_eq!(
        entry.metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        entry.metadata().unwrap().uid(),
        nix::unistd::geteuid().as_raw(),
        "the server's own"
    );
}

#[test]
fn python_reads_the_mbox_and_the_maildir() {
    if !tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("carol.mbox");
    let tables = format!("[mailbox.carol]\nmbox = \"{}\"", mbox.display());
    let text = base_config(dir.path(), "", "", &tables);
    let srv = Server::start_config(dir, &text);
    let mut c = srv.connect().hello();
    for i in 0..3 {
        let body =
            format!("Subject: number {i}\r\n\r\nFrom the start\r\n>From quoted\r\nline {i}\r\n");
        assert_eq!(
            c.send_mail(
                "a@remote.example",
                &["carol@test.example", "alice@test.example"],
                &body
            )
            .code,
            250
        );
    }
    let script = r#"
import mailbox, sys
mb = mailbox.mbox(sys.argv[1], create=False)
md = mailbox.Maildir(sys.argv[2], create=False)
for box in (mb, md):
    msgs = sorted(box, key=lambda m: m["Subject"])
    assert [m["Subject"] for m in msgs] == ["number 0", "number 1", "number 2"], [m["Subject"] for m in msgs]
    for i, m in enumerate(msgs):
        assert m["Delivered-To"] in ("carol@test.example", "alice@test.example"), m["Delivered-To"]
        assert m.get_payload().endswith("line %d\n" % i), repr(m.get_payload())
print("OK", len(mb), len(md))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&mbox)
        .arg(srv.maildir("alice"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK 3 3");
}
