//! The spool: one anonymous file per arriving message, so that memory stays
//! bounded whatever the message size. A body starts in memory (a memfd, up
//! to [`IN_MEMORY`] octets: most mail) and moves to a file in the spool
//! directory when it grows past that. Neither has a name: it lives only as
//! long as its handle, and a crash leaves nothing behind.
//!
//! Keeping small bodies off the file system matters: a new file costs an
//! inode (and, without O_TMPFILE, a directory entry), which on some file
//! systems is most of the price of delivering a message.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Bodies up to this size are spooled in memory.
pub const IN_MEMORY: u64 = 256 * 1024;

/// Creates the spool directory (mode 0700) if it is missing, and checks
/// that a spool file can be made there.
pub fn prepare(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    on_disk(dir).map(drop)
}

/// The header is looked at this far for a `Return-Path:` field.
const HEADER_SCAN: usize = 256 * 1024;

/// A copy of `body` without the `Return-Path:` fields its header has, if
/// it has any (within its first [`HEADER_SCAN`] octets); `None` when it
/// has none.
pub fn without_return_path(dir: &Path, body: super::Body<'_>) -> io::Result<Option<Spool>> {
    use crate::smtp::header;
    let head = body.read_head(HEADER_SCAN)?;
    let split = header::split(&head);
    let fields = &head[..split.header];
    if !header::fields(fields).any(|f| f.is("Return-Path")) {
        return Ok(None);
    }
    let mut spool = Spool::create(dir)?;
    spool.write(&header::remove(fields, &["Return-Path"]))?;
    spool.append(body.after(split.header as u64))?;
    Ok(Some(spool))
}

pub struct Spool {
    file: File,
    len: u64,
    /// Where to move the body once it outgrows memory; `None` once it is
    /// on disk.
    dir: Option<PathBuf>,
}

impl Spool {
    pub fn create(dir: &Path) -> io::Result<Spool> {
        let memory = nix::sys::memfd::memfd_create(
            c"mailroom-spool",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        );
        Ok(match memory {
            Ok(fd) => Spool {
                file: File::from(fd),
                len: 0,
                dir: Some(dir.to_path_buf()),
            },
            // A kernel without memfd: straight to disk.
            Err(_) => Spool {
                file: on_disk(dir)?,
                len: 0,
                dir: None,
            },
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.len + bytes.len() as u64 > IN_MEMORY {
            if let Some(dir) = self.dir.take() {
                let mut disk = on_disk(&dir)?;
                self.file.rewind()?;
                io::copy(&mut self.file, &mut disk)?;
                self.file = disk;
            }
        }
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Writes all of `body` after what is there, a piece at a time.
    pub fn append(&mut self, body: super::Body<'_>) -> io::Result<()> {
        let mut reader = body.reader();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            self.write(&chunk[..n])?;
        }
    }

    /// Everything written so far, as a message for delivery.
    pub fn body(&self) -> super::Body<'_> {
        super::Body::new(&self.file, 0, self.len)
    }
}

/// A new file in `dir` that has no name (O_TMPFILE, mode 0600), or `None`
/// where the kernel or the file system cannot make one: EOPNOTSUPP, or
/// EISDIR or EINVAL from kernels that do not know the flag.
pub fn nameless_file(dir: &Path, read: bool) -> io::Result<Option<File>> {
    let opened = OpenOptions::new()
        .read(read)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_TMPFILE.bits())
        .open(dir);
    match opened {
        Ok(file) => Ok(Some(file)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EOPNOTSUPP | nix::libc::EISDIR | nix::libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A new file in `dir` without a name: O_TMPFILE, or where the file system
/// cannot do that, a named file unlinked at once. A missing directory is
/// made.
fn on_disk(dir: &Path) -> io::Result<File> {
    match nameless_file(dir, true) {
        Ok(Some(file)) => return Ok(file),
        // Unsupported, or a missing directory: made below.
        Ok(None) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
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
                return Ok(file);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    fn contents(s: &Spool) -> Vec<u8> {
        let mut f = s.body().file();
        f.rewind().unwrap();
        let mut out = Vec::new();
        f.read_to_end(&mut out).unwrap();
        out
    }

    /// What the spool file is, as /proc names it.
    fn backing(s: &Spool) -> String {
        let link = format!("/proc/self/fd/{}", s.body().file().as_raw_fd());
        std::fs::read_link(link).unwrap().display().to_string()
    }

    #[test]
    fn small_bodies_stay_in_memory_and_large_ones_move_to_disk() {
        let dir = std::env::temp_dir().join(format!("mailroom-spool-test-{}", std::process::id()));
        let sub = dir.join("sub");
        prepare(&sub).unwrap();
        let mut s = Spool::create(&sub).unwrap();
        s.write(b"hello ").unwrap();
        s.write(b"world").unwrap();
        assert_eq!(contents(&s), b"hello world");
        assert!(backing(&s).starts_with("/memfd:"), "{}", backing(&s));
        let chunk = vec![b'x'; 100_000];
        for _ in 0..3 {
            s.write(&chunk).unwrap();
        }
        assert!(
            backing(&s).starts_with(&sub.display().to_string()),
            "{}",
            backing(&s)
        );
        s.write(b"end").unwrap();
        let all = contents(&s);
        assert_eq!(all.len(), 11 + 300_000 + 3);
        assert!(all.starts_with(b"hello world") && all.ends_with(b"xxend"));
        // Nothing in the directory has a name.
        assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
