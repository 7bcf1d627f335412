//! The queue as `mailq` shows it, in the layout of Postfix's: one entry
//! per message with its id, size, arrival time and sender, then each
//! recipient still waiting with the reason of its last failure.

use super::envelope::State;
use super::store::{Place, Queue};
use crate::smtp::trace::{asctime, UnixTime};
use std::fmt::Write as _;

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
                out.push_str(
                    "-Queue ID-          --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
                );
            }
            count += 1;
            octets += e.env.size;
            let mark = if place == Place::Hold { "!" } else { " " };
            // "Sun Nov 22 14:40:00", without the year.
            let arrived: String = asctime(UnixTime::from_secs(e.env.arrived))
                .chars()
                .take(19)
                .collect();
            let sender = if e.env.sender.is_empty() {
                "MAILER-DAEMON"
            } else {
                &e.env.sender
            };
            let _ = writeln!(
                out,
                "{id}{mark}{:>width$} {arrived}  {sender}",
                e.env.size,
                width = 29usize.saturating_sub(id.len()),
            );
            let state: State = e.state();
            for n in state.pending() {
                if let Some((status, why)) = &state.recipients[n].last_error {
                    let _ = writeln!(out, "{:47}({status} {why})", "");
                }
                let _ = writeln!(out, "{:47}{}", "", e.env.recipients[n].address);
            }
            out.push('\n');
        }
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
