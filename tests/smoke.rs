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
