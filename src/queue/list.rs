//! The queue as `mailq` shows it, in the layout of Postfix's: one entry
//! per message with its id, size, arrival time and sender, then each
//! recipient still waiting with the reason of its last failure.

use super::envelope::{Envelope, State};
use super::store::{Place, Queue};
use crate::smtp::trace::{asctime, UnixTime};
use std::fmt::Write as _;

/// The first line of a listing that is not empty.
const HEADER: &str = "-Queue ID-          --Size-- ----Arrival Time---- -Sender/Recipient-------\n";
/// The columns the header sets: a size ends just before `SIZE_END`, under
/// `--Size--`; the sender, the recipients and the reasons start at
/// `SENDER`, under `-Sender/Recipient-`.
const SIZE_END: usize = 28;
const SENDER: usize = 50;

/// The listing; unreadable files are named, not skipped in silence.
pub fn render(queue: &Queue) -> std::io::Result<String> {
    let mut out = String::new();
    let mut count = 0usize;
    let mut octets = 0u64;
    for place in [Place::Active, Place::Hold] {
        for id in queue.ids(place)? {
            let e = match queue.open(place, &id) {
                Ok(e) => e,
                Err(err) => {
                    let _ = writeln!(out, "{id:<20} (unreadable: {err})\n");
                    continue;
                }
            };
            if count == 0 {
                out.push_str(HEADER);
            }
            count += 1;
            octets += e.env.size;
            let mark = if place == Place::Hold { '!' } else { ' ' };
            first_line(&mut out, &id, mark, &e.env, e.env.arrived);
            let state: State = e.state();
            for n in state.pending() {
                if let Some((status, why)) = &state.recipients[n].last_error {
                    let _ = writeln!(out, "{:SENDER$}({status} {why})", "");
                }
                let _ = writeln!(out, "{:SENDER$}{}", "", e.env.recipients[n].address);
            }
            out.push('\n');
        }
    }
    // Drops the daemon has not taken yet: it does not run, or is about to.
    let drops = super::maildrop::peek(queue);
    for w in &drops {
        if count == 0 {
            out.push_str(HEADER);
        }
        count += 1;
        octets += w.env.size;
        let id: String = w.name.chars().take(18).collect();
        first_line(&mut out, &id, '+', &w.env, w.dropped);
        for r in &w.env.recipients {
            let _ = writeln!(out, "{:SENDER$}{}", "", r.address);
        }
        out.push('\n');
    }
    if !drops.is_empty() {
        out.push_str("(+: in the maildrop, waiting for the daemon to take it)\n");
    }
    if count == 0 {
        out.push_str("Mail queue is empty\n");
    } else {
        let _ = writeln!(
            out,
            "-- {} Kbytes in {count} Request{}.",
            octets.div_ceil(1024),
            if count == 1 { "" } else { "s" }
        );
    }
    Ok(out)
}

/// An entry's first line: id and mark, size, arrival and sender.
fn first_line(out: &mut String, id: &str, mark: char, env: &Envelope, arrived: i64) {
    let sender = if env.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &env.sender
    };
    let _ = writeln!(
        out,
        "{id}{mark}{:>width$} {}  {sender}",
        env.size,
        arrival(arrived),
        width = SIZE_END.saturating_sub(id.len() + 1),
    );
}

/// "Sun Nov 22 14:40:00": asctime without the year.
fn arrival(secs: i64) -> String {
    asctime(UnixTime::from_secs(secs))
        .chars()
        .take(19)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_columns_are_the_headers() {
        assert_eq!(HEADER.find("--Size--").map(|at| at + 8), Some(SIZE_END));
        assert_eq!(HEADER.find("-Sender/Recipient-"), Some(SENDER));
    }
}
