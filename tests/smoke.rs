mod support;
use support::*;

#[test]
fn a_message_arrives_in_the_maildir() {
    let srv = Server::start();
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "sender@remote.example",
        &["alice@test.example"],
        "Subject: hello\r\n\r\nbody\r\n",
    );
    assert_eq!(r.code, 250, "{r:?}");
    let msgs = srv.messages("alice");
    assert_eq!(msgs.len(), 1);
    let m = Parsed::new(msgs[0].clone());
    assert_eq!(m.subject().as_deref(), Some("hello"));
    assert_eq!(
        m.header("Return-Path").as_deref(),
        Some("<sender@remote.example>")
    );
}

#[test]
fn help_lists_every_command_and_version_names_the_release() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in [
        "--config FILE",
        "--check-config FILE",
        "mailroom sendmail",
        "mailroom mailq",
        "mailroom newaliases",
        "mailroom queue list",
        "--version",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("mailroom {}", env!("CARGO_PKG_VERSION"))
    );
}
