//! Maildir delivery, the qmail way: a unique name, the file created with
//! O_EXCL in `tmp/`, written and fsynced, linked into `new/`, and `new/`
//! fsynced, all before the caller may say 250. A reader never sees a partial
//! message in `new/`, and a crash leaves at most a stray file in `tmp/`.

use super::DeliveryError;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Writes `prefix` followed by the whole of `body` as one new message in
/// the Maildir at `dir`, creating the Maildir if needed. Returns the path
/// of the message in `new/`.
pub fn deliver(
    dir: &Path,
    prefix: &[u8],
    body: &File,
    hostname: &str,
) -> Result<PathBuf, DeliveryError> {
    let body_len = body
        .metadata()
        .map_err(|e| DeliveryError::io("spool", &e))?
        .len();
    let size = prefix.len() as u64 + body_len;
    let tmp_dir = dir.join("tmp");
    let mut attempts = 0;
    let (name, mut file) = loop {
        let name = unique_name(hostname, size);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp_dir.join(&name))
        {
            Ok(f) => break (name, f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts == 0 => {
                create(dir).map_err(|e| {
                    DeliveryError::io(&format!("creating Maildir {}", dir.display()), &e)
                })?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 5 => {}
            Err(e) => {
                return Err(DeliveryError::io(
                    &format!("creating {}", tmp_dir.join(&name).display()),
                    &e,
                ))
            }
        }
        attempts += 1;
    };
    let tmp_path = tmp_dir.join(&name);
    let new_path = dir.join("new").join(&name);
    let written = write_and_sync(&mut file, prefix, body).and_then(|()| {
        drop(file);
        std::fs::hard_link(&tmp_path, &new_path)
    });
    // The tmp/ name goes whatever happened: on success new/ holds the link.
    let _ = std::fs::remove_file(&tmp_path);
    written.map_err(|e| DeliveryError::io(&format!("writing {}", tmp_path.display()), &e))?;
    File::open(dir.join("new"))
        .and_then(|d| d.sync_all())
        .map_err(|e| DeliveryError::io(&format!("syncing {}/new", dir.display()), &e))?;
    Ok(new_path)
}

fn write_and_sync(file: &mut File, prefix: &[u8], body: &File) -> io::Result<()> {
    file.write_all(prefix)?;
    let mut body = body;
    body.rewind()?;
    io::copy(&mut body, file)?;
    file.sync_all()
}

/// Creates `dir` with `cur`, `new` and `tmp`, mode 0700.
pub fn create(dir: &Path) -> io::Result<()> {
    let mut b = DirBuilder::new();
    b.recursive(true).mode(0o700);
    for sub in ["cur", "new", "tmp"] {
        b.create(dir.join(sub))?;
    }
    Ok(())
}

/// `<secs>.M<usecs>P<pid>Q<seq>.<host>,S=<size>` (the Maildir naming of
/// qmail and Dovecot), with `/` and `:` in the host name escaped.
fn unique_name(hostname: &str, size: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let host = hostname.replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{},S={}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        seq,
        host,
        size
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::Spool;

    #[test]
    fn delivers_into_new_and_leaves_tmp_empty() {
        let root =
            std::env::temp_dir().join(format!("mailroom-maildir-test-{}", std::process::id()));
        let mut spool = Spool::create(&root.join("spool")).unwrap();
        spool.write(b"Subject: x\n\nbody\n").unwrap();
        let md = root.join("a/Maildir");
        let p1 = deliver(&md, b"Return-Path: <>\n", spool.file(), "host/x:y").unwrap();
        let p2 = deliver(&md, b"Return-Path: <>\n", spool.file(), "host/x:y").unwrap();
        assert_ne!(p1, p2);
        let text = std::fs::read_to_string(&p1).unwrap();
        assert_eq!(text, "Return-Path: <>\nSubject: x\n\nbody\n");
        let name = p1.file_name().unwrap().to_str().unwrap();
        assert!(name.contains(".host\\057x\\072y,S=33"), "{name}");
        assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(md.join("new")).unwrap().count(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(md.join("new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
