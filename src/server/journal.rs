//! Log lines for the journal. Under systemd, whose `JOURNAL_STREAM` names
//! the very stream that is our stderr (sd_journal_stream_fd(3)), each line
//! starts with its syslog priority (`<3>` error .. `<7>` debug, as
//! sd-daemon(3) reads it) and has no timestamp of its own: the journal
//! keeps both, and `journalctl -p warning` works. Elsewhere the lines stay
//! as env_logger writes them.

use std::io::Write;
use std::os::fd::AsFd;

/// Sets up logging to stderr at `default` unless `RUST_LOG` says
/// otherwise.
pub fn init(default: &str) {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    if stderr_is_journal() {
        b.format(|buf, record| {
            writeln!(
                buf,
                "<{}>{}: {}",
                priority(record.level()),
                record.target(),
                record.args()
            )
        });
    }
    b.init();
}

/// True when `JOURNAL_STREAM` (`DEVICE:INODE`) is our stderr: a child
/// that inherited the variable but writes elsewhere must not use it.
fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    want.to_str() == Some(&format!("{}:{}", st.st_dev, st.st_ino))
}

/// A level's syslog priority, as the journal reads it from `<N>`.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_has_its_syslog_priority() {
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Debug), 7);
        assert_eq!(priority(log::Level::Trace), 7);
    }
}
