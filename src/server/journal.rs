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
                "{}",
                line(record.level(), record.target(), &record.args().to_string())
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

/// One line as the journal reads it.
pub fn line(level: log::Level, target: &str, msg: &str) -> String {
    let priority = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    format!("<{priority}>{target}: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_has_its_syslog_priority() {
        assert_eq!(
            line(log::Level::Error, "mailroom::server", "x"),
            "<3>mailroom::server: x"
        );
        assert_eq!(line(log::Level::Warn, "t", "w"), "<4>t: w");
        assert_eq!(line(log::Level::Info, "t", "i"), "<6>t: i");
        assert_eq!(line(log::Level::Debug, "t", "d"), "<7>t: d");
        assert_eq!(line(log::Level::Trace, "t", "t"), "<7>t: t");
    }
}
