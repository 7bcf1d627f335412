//! A loopback smarthost for relay tests: `smarthost.py` (beside this file,
//! Python 3 stdlib only) run as a child process on 127.0.0.1, with what
//! it received read back from its spool directory and its transcript.
//! The child is killed by its PID when the handle drops.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smarthost.py");

/// A running sink.
pub struct Smarthost {
    child: Option<Child>,
    pub port: u16,
    /// Holds the spool, the transcript and the sink's own stderr.
    pub dir: tempfile::TempDir,
}

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// The envelope as written (`key: value` lines).
    pub envelope: String,
    /// The message as it arrived, dot-unstuffed, CRLF line ends as sent.
    pub data: Vec<u8>,
}

impl Relayed {
    /// The values of every envelope line with this key, in order.
    pub fn values(&self, key: &str) -> Vec<String> {
        self.envelope
            .lines()
            .filter_map(|l| l.split_once(": ").or_else(|| l.split_once(':')))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    /// The value of the first envelope line with this key ("" if none).
    pub fn value(&self, key: &str) -> String {
        self.values(key).into_iter().next().unwrap_or_default()
    }

    /// The reverse path, without its brackets.
    pub fn mail_from(&self) -> String {
        self.value("mail-from")
    }

    /// The MAIL parameters, as given.
    pub fn mail_params(&self) -> Vec<String> {
        self.value("mail-params")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// The accepted recipients with their parameters.
    pub fn rcpts(&self) -> Vec<(String, Vec<String>)> {
        self.values("rcpt")
            .iter()
            .map(|l| {
                let mut words = l.split_whitespace().map(str::to_string);
                let address = words.next().unwrap_or_default();
                (address, words.collect())
            })
            .collect()
    }

    /// The accepted recipients' addresses.
    pub fn rcpt_addresses(&self) -> Vec<String> {
        self.rcpts().into_iter().map(|(a, _)| a).collect()
    }

    pub fn tls(&self) -> bool {
        self.value("tls") == "yes"
    }

    /// Who logged in, if anyone did.
    pub fn auth(&self) -> Option<String> {
        Some(self.value("auth")).filter(|u| !u.is_empty() && u != "-")
    }

    /// The connection it came over (numbered from 1).
    pub fn connection(&self) -> u32 {
        self.value("connection").parse().unwrap_or(0)
    }

    /// The message with CRLF made LF, as mailroom stores mail.
    pub fn data_lf(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len());
        let mut i = 0;
        while i < self.data.len() {
            if self.data[i..].starts_with(b"\r\n") {
                out.push(b'\n');
                i += 2;
            } else {
                out.push(self.data[i]);
                i += 1;
            }
        }
        out
    }
}

impl Smarthost {
    /// Starts the sink with these extra command-line flags (see
    /// `smarthost.py --help`).
    pub fn start(args: &[&str]) -> Smarthost {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg("--spool")
            .arg(dir.path().join("spool"))
            .arg("--transcript")
            .arg(dir.path().join("transcript"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn python3 smarthost.py");
        // The first line is the port (or "unix").
        let line = super::first_line(&mut child);
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "smarthost.py did not start (first line {line:?}):\n{}",
                std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
            );
        };
        Smarthost {
            child: Some(child),
            port,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn transcript_path(&self) -> PathBuf {
        self.dir.path().join("transcript")
    }

    /// Every line of the transcript so far.
    pub fn transcript(&self) -> String {
        std::fs::read_to_string(self.transcript_path()).unwrap_or_default()
    }

    /// The commands received (`C:` lines), each with the number of its
    /// connection.
    pub fn commands(&self) -> Vec<(u32, String)> {
        self.transcript()
            .lines()
            .filter_map(|l| {
                let (n, rest) = l.split_once(' ')?;
                let cmd = rest.strip_prefix("C: ")?;
                Some((n.parse().ok()?, cmd.to_string()))
            })
            .collect()
    }

    /// How many connections were made to it.
    pub fn connections(&self) -> usize {
        self.transcript()
            .lines()
            .filter(|l| l.contains(" * connect from "))
            .count()
    }

    /// The sink's own error output (Python tracebacks, if any).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// The messages accepted so far, in the order they were accepted.
    pub fn messages(&self) -> Vec<Relayed> {
        read_spool(&self.spool())
    }

    /// Waits (at most `timeout`) until at least `n` messages are in; what
    /// is there then, which the caller checks.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Relayed> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits (at most `timeout`) until the transcript holds `needle`.
    pub fn wait_transcript(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.transcript().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Kills the sink now (SIGKILL, by PID).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Smarthost {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the spool's `msg-*.eml` files (never the `.tmp-*` ones being
/// written), in order.
pub fn read_spool(dir: &Path) -> Vec<Relayed> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("msg-") && n.ends_with(".eml"))
        })
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let raw = std::fs::read(p).unwrap();
            let split = raw
                .windows(2)
                .position(|w| w == b"\n\n")
                .expect("an envelope, an empty line, then the message");
            Relayed {
                envelope: String::from_utf8_lossy(&raw[..split + 1]).into_owned(),
                data: raw[split + 2..].to_vec(),
            }
        })
        .collect()
}
