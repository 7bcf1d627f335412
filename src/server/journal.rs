//! Log lines for the journal. Under systemd, whose `JOURNAL_STREAM` names
//! the very stream that is our stderr (sd_journal_stream_fd(3)), each line
//! starts with its syslog priority (`<3>` error .. `<7>` debug, as
//! sd-daemon(3) reads it) and has no timestamp of its own: the journal
//! keeps both, and `journalctl -p warning` works. Elsewhere the lines stay
//! as env_logger writes them. With `log_format = "logfmt"` each line is
//! `ts=... level=... target=... msg="..."` instead (without `ts` under the
//! journal, after the priority).

use crate::config::LogFormat;
use std::io::Write;
use std::os::fd::AsFd;

/// Sets up logging to stderr at `default` unless `RUST_LOG` says
/// otherwise.
pub fn init(default: &str, format: LogFormat) {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    let journal = stderr_is_journal();
    match format {
        LogFormat::Logfmt => {
            b.format(move |buf, record| {
                let ts = (!journal).then(|| buf.timestamp_seconds().to_string());
                let prio = journal.then(|| priority(record.level()));
                let msg = record.args().to_string();
                writeln!(
                    buf,
                    "{}",
                    logfmt(prio, ts.as_deref(), record.level(), record.target(), &msg)
                )
            });
        }
        LogFormat::Text if journal => {
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
        LogFormat::Text => {}
    }
    b.init();
}

/// One logfmt line (without its newline).
fn logfmt(
    priority: Option<u8>,
    ts: Option<&str>,
    level: log::Level,
    target: &str,
    msg: &str,
) -> String {
    let mut line = String::new();
    if let Some(p) = priority {
        line.push_str(&format!("<{p}>"));
    }
    if let Some(ts) = ts {
        line.push_str(&format!("ts={ts} "));
    }
    let level = level.as_str().to_ascii_lowercase();
    line.push_str(&format!(
        "level={level} target={} msg={}",
        logfmt_value(target),
        logfmt_value(msg)
    ));
    line
}

/// A value as logfmt writes it: bare when it is one plain word, else in
/// double quotes with `"` and `\` escaped and control characters as
/// `\n`, `\t` or `\u{..}`, so that a line is always one line.
fn logfmt_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

    #[test]
    fn logfmt_lines_quote_what_needs_it_and_stay_one_line() {
        assert_eq!(
            logfmt(
                None,
                Some("2026-12-07T16:55:41Z"),
                log::Level::Info,
                "mailroom::server",
                "ready: 8 workers on 1 listeners"
            ),
            "ts=2026-12-07T16:55:41Z level=info target=mailroom::server msg=\"ready: 8 workers on 1 listeners\""
        );
        assert_eq!(
            logfmt(Some(4), None, log::Level::Warn, "t", "x"),
            "<4>level=warn target=t msg=x"
        );
        for (raw, written) in [
            ("", "\"\""),
            ("a=b", "\"a=b\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("back\\slash", "\"back\\\\slash\""),
            ("two\nlines\r", "\"two\\nlines\\r\""),
            ("bell\u{7}", "\"bell\\u{7}\""),
            ("née", "née"),
        ] {
            assert_eq!(logfmt_value(raw), written, "{raw:?}");
        }
    }
}
