//! A milter for tests: `milter.py` (beside this file, Python 3 stdlib
//! only, the raw protocol) run as a child process on 127.0.0.1 or a Unix
//! socket, told what to say by rules, with what it was sent read back
//! from its event log. The child is killed by its PID when the handle
//! drops.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/milter.py");

pub struct TestMilter {
    child: Option<Child>,
    /// `inet:127.0.0.1:PORT` or `unix:PATH`.
    pub address: String,
    pub dir: tempfile::TempDir,
}

/// One packet the milter received.
#[derive(Debug, Clone)]
pub struct Event {
    pub conn: u64,
    pub cmd: String,
    pub args: Vec<String>,
    /// The macros sent just before it, `name=value`.
    pub macros: Vec<(String, String)>,
}

impl Event {
    pub fn macro_value(&self, name: &str) -> Option<&str> {
        self.macros
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl TestMilter {
    /// Starts on TCP with these rules (JSON, see `milter.py`) and extra
    /// flags.
    pub fn start(rules: &str, flags: &[&str]) -> TestMilter {
        Self::spawn(rules, flags, false)
    }

    /// The same on a Unix socket in its directory.
    pub fn start_unix(rules: &str) -> TestMilter {
        Self::spawn(rules, &[], true)
    }

    fn spawn(rules: &str, flags: &[&str], unix: bool) -> TestMilter {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let socket = dir.path().join("milter.sock");
        let mut cmd = Command::new("python3");
        cmd.arg(SCRIPT)
            .arg("--events")
            .arg(dir.path().join("events"))
            .arg("--rules")
            .arg(rules)
            .args(flags);
        if unix {
            cmd.arg("--unix").arg(&socket);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn python3 milter.py");
        let line = super::first_line(&mut child);
        let address = match line.trim() {
            "unix" => format!("unix:{}", socket.display()),
            port if port.parse::<u16>().is_ok() => format!("inet:127.0.0.1:{port}"),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "milter.py did not start (first line {line:?}):\n{}",
                    std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
                );
            }
        };
        TestMilter {
            child: Some(child),
            address,
            dir,
        }
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events")
    }

    /// Every packet received so far, in order.
    pub fn events(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(self.events_path()).unwrap_or_default();
        text.lines().filter_map(parse_event).collect()
    }

    /// The commands received, as their codes, in order (`"OCHMRT..."`).
    pub fn codes(&self) -> String {
        self.events().iter().map(|e| e.cmd.as_str()).collect()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Stops it now (a milter that is down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestMilter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One line of the event log (see `milter.py`).
fn parse_event(line: &str) -> Option<Event> {
    let mut fields = line.split('\t');
    let conn = fields.next()?.parse().ok()?;
    let cmd = fields.next()?.to_string();
    let list = |f: Option<&str>| -> Vec<String> {
        f.filter(|f| !f.is_empty())
            .map(|f| f.split('\x1f').map(unescape).collect())
            .unwrap_or_default()
    };
    let args = list(fields.next());
    let macros = list(fields.next())
        .into_iter()
        .filter_map(|m| {
            m.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    Some(Event {
        conn,
        cmd,
        args,
        macros,
    })
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('s') => out.push('\x1f'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}
