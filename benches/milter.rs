//! What a milter costs mailroom itself: the milter client of a session
//! (`mailroom::milter::Chain`) run against a pass-through milter
//! (`common::noop_milter`, on loopback, every stage a round trip), a
//! message at a time, with this thread's CPU time (CLOCK_THREAD_CPUTIME_ID)
//! and the wall time per message: the CPU a message costs mailroom for its
//! milter, and the latency the round trips add before its 250. Two
//! milters: one that answers every stage (connect, HELO, MAIL, RCPT,
//! DATA, each header field, end of header, body, end of message: 15 round
//! trips here with the negotiation), and one that asks for the end of the
//! message only (libmilter asks so for a filter with no other callbacks;
//! 2 round trips), that one also on a Unix socket (as OpenDKIM,
//! clamav-milter and spamass-milter listen on Debian). Each two ways: a
//! new milter connection for each message (as when each message comes on
//! a connection of its own) and one connection for them all.
//!
//! `cargo bench --bench milter` (arguments after `--`: MESSAGES, default
//! 5000; the message is 4 KiB with six header fields).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use mailroom::config::Config;
use mailroom::delivery::spool::Spool;
use mailroom::milter::{Chain, Client, Verdict};
use nix::time::{clock_gettime, ClockId};
use std::time::{Duration, Instant};

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

fn client() -> Client {
    Client {
        hostname: "bench.example".into(),
        addr: Some("127.0.0.1:40000".parse().unwrap()),
        name: None,
        user: None,
        local: Some("127.0.0.1:25".parse().unwrap()),
    }
}

/// One message's envelope and content through the chain.
fn message(chain: &mut Chain, n: usize, spool: &Spool, dir: &std::path::Path) {
    assert_eq!(chain.helo("client.example"), Verdict::Go);
    let id = format!("bench{n}");
    assert_eq!(
        chain.mail(&id, &["<load@client.example>".into(), "SIZE=4096".into()]),
        Verdict::Go
    );
    assert_eq!(chain.rcpt(&["<benchuser@localhost>".into()]), Verdict::Go);
    let eom = chain.message(spool.body(), true, dir, 1 << 20);
    assert_eq!(eom.verdict, Verdict::Go);
}

fn main() {
    let messages: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    let every = common::noop_milter(0, None);
    let eom = common::noop_milter(common::EOM_ONLY, None);
    let eom_unix = common::noop_milter(common::EOM_ONLY, Some(&dir.path().join("noop.sock")));
    let mut spool = Spool::create(dir.path()).unwrap();
    let mut text = String::from(
        "Received: from client.example ([127.0.0.1])\n\tby bench.example (mailroom) with ESMTP id x;\n\tMon, 7 Dec 2026 10:00:00 +0000\n\
         From: <load@client.example>\nTo: <benchuser@localhost>\nSubject: bench 1\n\
         Date: Mon, 7 Dec 2026 10:00:00 +0000\nMessage-ID: <1@client.example>\nMIME-Version: 1.0\n\n",
    );
    while text.len() < 4096 {
        text.push_str("The quick brown fox jumps over the lazy dog, again and again.\n");
    }
    spool.write(text.as_bytes()).unwrap();
    println!(
        "{:<16} {:<6} {:<22} {:>9} {:>12} {:>12}",
        "milter answers", "socket", "milter connection", "messages", "cpu us/msg", "wall us/msg"
    );
    for (label, address, reuse) in [
        ("every stage", &every, false),
        ("every stage", &every, true),
        ("end of message", &eom, false),
        ("end of message", &eom, true),
        ("end of message", &eom_unix, false),
        ("end of message", &eom_unix, true),
    ] {
        let config = Config::parse(
            &format!(
                "milters = [\"{address}\"]\nspool_dir = \"{}\"",
                dir.path().display()
            ),
            "bench",
        )
        .unwrap();
        let cpu0 = thread_cpu();
        let wall0 = Instant::now();
        let mut kept: Option<Chain> = None;
        for n in 0..messages {
            let chain = match kept.take() {
                Some(c) => c,
                None => {
                    let (c, v) = Chain::open(&config.milters, client());
                    assert_eq!(v, Verdict::Go);
                    c
                }
            };
            let mut chain = chain;
            message(&mut chain, n, &spool, dir.path());
            if reuse {
                kept = Some(chain);
            } else {
                chain.quit();
            }
        }
        if let Some(c) = kept {
            c.quit();
        }
        let cpu = thread_cpu() - cpu0;
        let wall = wall0.elapsed();
        println!(
            "{:<16} {:<6} {:<22} {:>9} {:>12.1} {:>12.1}",
            label,
            if address.starts_with("unix:") {
                "unix"
            } else {
                "tcp"
            },
            if reuse {
                "one for all messages"
            } else {
                "one per message"
            },
            messages,
            cpu.as_secs_f64() * 1e6 / messages as f64,
            wall.as_secs_f64() * 1e6 / messages as f64
        );
    }
}
