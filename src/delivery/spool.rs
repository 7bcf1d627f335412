//! The spool: one anonymous file per arriving message, so that memory stays
//! bounded by the line buffer whatever the message size. The file is
//! unlinked as soon as it is created: it lives only as long as its handle,
//! and a crash leaves nothing behind.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates the spool directory (mode 0700) if it is missing, and checks
/// that a spool file can be made there.
pub fn prepare(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    Spool::create(dir).map(drop)
}

pub struct Spool {
    file: File,
}

impl Spool {
    pub fn create(dir: &Path) -> io::Result<Spool> {
        let mut made_dir = false;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("spool.{}.{n}", std::process::id()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    std::fs::remove_file(&path)?;
                    return Ok(Spool { file });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !made_dir => {
                    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
                    made_dir = true;
                }
                // A leftover of an earlier process with our pid: take the next name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn spool_is_anonymous_and_readable() {
        let dir = std::env::temp_dir().join(format!("mailroom-spool-test-{}", std::process::id()));
        let mut s = Spool::create(&dir.join("sub")).unwrap();
        s.write(b"hello ").unwrap();
        s.write(b"world").unwrap();
        assert_eq!(std::fs::read_dir(dir.join("sub")).unwrap().count(), 0);
        let mut f = s.file();
        f.rewind().unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
