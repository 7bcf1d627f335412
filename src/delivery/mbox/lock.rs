//! Locking an mbox so that mutt, mailx, Dovecot and procmail agree: a
//! `<mbox>.lock` dot-lock created with O_EXCL, holding our pid (stale ones,
//! whose process is gone or which are older than a limit, are broken), and
//! an fcntl write lock, both tried within a bounded wait and never one
//! held while waiting for the other. The fcntl lock is an open file
//! description lock, so that two threads of this process exclude each
//! other as well as other processes (it conflicts with classic POSIX locks
//! too). Where no dot-lock can be made (the directory is not ours to
//! write), the fcntl lock alone is used, as Postfix does.

use super::super::{io_error, DeliveryError, Failure};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Takes both locks on the open mbox `file` at `path`, waiting until
/// `deadline`; the dot-lock comes back to be held (`None` where none can
/// be made), the fcntl lock goes with the file.
pub(super) fn lock(
    path: &Path,
    file: &File,
    deadline: Instant,
    stale: Duration,
) -> Result<Option<DotLock>, DeliveryError> {
    let mut dotlocks = true;
    let mut pause = Duration::from_millis(10);
    loop {
        let mut held = None;
        let mut busy = false;
        if dotlocks {
            match DotLock::try_take(path, stale) {
                Ok(Some(l)) => held = Some(l),
                Ok(None) => busy = true,
                Err(e) => {
                    // As Postfix does when the directory is not ours to
                    // write: the fcntl lock alone has to do.
                    log::debug!(
                        "{}: no dot-lock ({e}); using the fcntl lock alone",
                        path.display()
                    );
                    dotlocks = false;
                }
            }
        }
        if !busy {
            match fcntl_lock(file) {
                Ok(true) => return Ok(held),
                Ok(false) => {}
                Err(e) => return Err(io_error(&format!("locking {}", path.display()), &e)),
            }
            // Never hold one lock while waiting for the other.
            drop(held);
        }
        if Instant::now() >= deadline {
            return Err(DeliveryError {
                kind: Failure::Temporary,
                reason: format!("{} is locked by another program", path.display()),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// An exclusive open-file-description write lock on the whole file; false
/// if someone else holds a conflicting lock.
pub(super) fn fcntl_lock(file: &File) -> io::Result<bool> {
    let fl = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as _,
        l_whence: nix::libc::SEEK_SET as _,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match fcntl(file, FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `<mbox>.lock`, holding our process id, removed when dropped.
#[derive(Debug)]
pub(super) struct DotLock {
    path: PathBuf,
}

/// The dot-locks this process holds (a path once per holder). A lock file
/// naming our own pid that is not here was left by an earlier process
/// that had our pid (a server that is pid 1 in a container, restarted).
static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

static TEMP: AtomicU64 = AtomicU64::new(0);

impl DotLock {
    /// `Ok(None)` while another live holder has it; `Err` when no dot-lock
    /// can be made here at all.
    fn try_take(mbox: &Path, stale: Duration) -> io::Result<Option<DotLock>> {
        let mut name = mbox.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        for _ in 0..2 {
            // Registered before it exists, so that no thread of ours can
            // take it for a leftover.
            held().push(path.clone());
            match create_with_pid(&path) {
                Ok(()) => return Ok(Some(DotLock { path })),
                Err(e) => {
                    release(&path);
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
            }
            if !is_stale(&path, stale) {
                return Ok(None);
            }
            log::info!("{}: breaking a stale lock", path.display());
            let _ = std::fs::remove_file(&path);
        }
        Ok(None)
    }
}

/// Creates `path` holding our pid and a newline (liblockfile's format),
/// never visible empty: the pid is written to a unique file that is then
/// hard-linked to `path`. Where hard links are not supported, the file is
/// created with O_EXCL and written at once.
fn create_with_pid(path: &Path) -> io::Result<()> {
    let pid = format!("{}\n", std::process::id());
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(
        ".{}.{}",
        std::process::id(),
        TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = PathBuf::from(temp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    let written = f.write_all(pid.as_bytes());
    drop(f);
    let linked = written.and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match linked {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EPERM | nix::libc::EOPNOTSUPP)
            ) =>
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(pid.as_bytes())
        }
        other => other,
    }
}

fn release(path: &Path) {
    let mut held = held();
    if let Some(i) = held.iter().position(|p| p == path) {
        held.swap_remove(i);
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        // Only if it is still ours: someone who judged it stale may have
        // taken it over.
        let mut text = String::new();
        if let Ok(f) = File::open(&self.path) {
            let _ = f.take(32).read_to_string(&mut text);
        }
        if text.trim() == std::process::id().to_string() {
            let _ = std::fs::remove_file(&self.path);
        }
        release(&self.path);
    }
}

/// A lock file is stale when the process it names is gone (or is us, not
/// holding it), or when it has not been touched for `age`.
fn is_stale(path: &Path, age: Duration) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let mut text = String::new();
    if let Ok(f) = File::open(path) {
        let _ = f.take(32).read_to_string(&mut text);
    }
    if let Ok(pid) = text.trim().parse::<i32>() {
        if pid == std::process::id() as i32 && !held().contains(&path.to_path_buf()) {
            return true;
        }
        if pid > 0
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(Errno::ESRCH)
        {
            return true;
        }
    }
    meta.modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|d| d > age)
}
