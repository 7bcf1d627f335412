//! Helpers for the delivery tests (aliases, lists, pipes, notifications,
//! mbox, Maildir): a server started with an aliases file, a directory
//! pipes may write to, one message sent, an mbox read as text, and the
//! parts of a delivery status notification.

#![allow(dead_code)]

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A server whose aliases file holds `aliases` ({d} stands for the
/// temporary directory) and whose mailbox tables include `tables`.
pub fn with_aliases(aliases: &str, top: &str, tables: &str) -> Server {
    with_aliases_and_file_limit(aliases, top, tables, None)
}

/// `files`: at most that many open file descriptors for the server.
pub fn with_aliases_and_file_limit(
    aliases: &str,
    top: &str,
    tables: &str,
    files: Option<u32>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let path = dir.path().join("aliases");
    std::fs::write(&path, aliases.replace("{d}", &d)).unwrap();
    let top = format!("aliases = \"{}\"\n{top}", path.display());
    let text = base_config(dir.path(), &top, "", &tables.replace("{d}", &d));
    match files {
        Some(n) => Server::start_config_with_file_limit(dir, &text, n),
        None => Server::start_config(dir, &text),
    }
}

/// A directory anyone can write to, for files written by pipes (which run
/// as `nobody` when the tests run as root).
pub fn open_dir(srv: &Server, name: &str) -> PathBuf {
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

pub fn send(srv: &Server, to: &[&str], subject: &str) -> Reply {
    let mut c = srv.connect().hello();
    let r = c.send_mail(
        "sender@remote.example",
        to,
        &format!("Subject: {subject}\r\n\r\nbody of {subject}\r\n"),
    );
    let _ = c.cmd("QUIT");
    r
}

pub fn mbox_text(path: &Path) -> Vec<String> {
    mbox_messages(path)
        .into_iter()
        .map(|m| String::from_utf8(m).unwrap())
        .collect()
}

/// A notification from `mailbox`'s Maildir: its parts as text.
pub fn dsn_parts(raw: &[u8]) -> (Parsed, String, String, String) {
    let parsed = Parsed::new(raw.to_vec());
    let m = mail_parser::MessageParser::default().parse(raw).unwrap();
    use mail_parser::MimeHeaders;
    let ct = m.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let part =
        |i: usize| String::from_utf8_lossy(m.part(i as u32).unwrap().contents()).into_owned();
    let text = part(1);
    let status = part(2);
    let headers = part(3);
    (parsed, text, status, headers)
}
