//! Which command is allowed when: the session's phase, and one table of
//! verb x phase that says, for every pair, go on or the `503` to give
//! (OpenSMTPD's `commands[]` with its `smtp_check_*`; qmail-smtpd's
//! whole state is two ints). Checks that depend on more than the phase
//! (an extension not offered, a listener that requires TLS, a transaction
//! without recipients, a binary body) are made around the table, in the
//! one order of `Session::gate`.

use crate::smtp::command::Command;
use crate::smtp::reply::{self, Reply};

/// Where a session is. An AUTH exchange (RFC 4954) in progress is not a
/// phase: its lines are not commands, and the session routes them before
/// anything here is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connected, or TLS just started: no HELO/EHLO yet.
    Fresh,
    /// Greeted; no transaction open.
    Greeted,
    /// MAIL accepted: the envelope's recipients come in, then the body.
    Envelope,
    /// BDAT chunks are arriving: the body has begun.
    Chunking,
}

/// Command verbs, without their arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy,
    Expn,
    StartTls,
    Auth,
    /// A verb this server knows but does not offer (ETRN, TURN, ...).
    Unoffered,
}

impl Verb {
    pub fn of(cmd: &Command) -> Verb {
        match cmd {
            Command::Helo(_) => Verb::Helo,
            Command::Ehlo(_) => Verb::Ehlo,
            Command::Mail { .. } => Verb::Mail,
            Command::Rcpt { .. } => Verb::Rcpt,
            Command::Data => Verb::Data,
            Command::Bdat { .. } => Verb::Bdat,
            Command::Rset => Verb::Rset,
            Command::Noop => Verb::Noop,
            Command::Quit => Verb::Quit,
            Command::Help(_) => Verb::Help,
            Command::Vrfy(_) => Verb::Vrfy,
            Command::Expn(_) => Verb::Expn,
            Command::StartTls => Verb::StartTls,
            Command::Auth { .. } => Verb::Auth,
            Command::NotImplemented => Verb::Unoffered,
        }
    }

    /// Whether a listener that requires TLS refuses this verb before it.
    pub fn needs_tls_first(self) -> bool {
        matches!(
            self,
            Verb::Mail | Verb::Rcpt | Verb::Data | Verb::Bdat | Verb::Vrfy | Verb::Expn
        )
    }
}

/// The table: `Ok` to go on, or the reply for a command out of order.
pub fn check(verb: Verb, phase: Phase) -> Result<(), Reply> {
    use Phase::*;
    use Verb::*;
    let refuse = |text| Err(reply::bad_sequence(text));
    match (verb, phase) {
        (Helo | Ehlo | Rset | Noop | Quit | Help | Vrfy | Expn | Unoffered, _) => Ok(()),
        (Mail, Greeted) | (Rcpt | Data, Envelope) | (Bdat, Envelope | Chunking) => Ok(()),
        (StartTls, Fresh | Greeted) => Ok(()),
        (Auth, Greeted) => Ok(()),
        // An ESMTP extension: EHLO first (RFC 4954 4), and never amid a
        // transaction (503, RFC 4954 4).
        (Auth, Fresh) => refuse("Error: send EHLO first"),
        (Auth, Envelope | Chunking) => refuse("Error: AUTH not allowed inside a mail transaction"),
        (Mail | Data | Bdat, Fresh) => refuse("Error: send HELO/EHLO first"),
        (Mail, Envelope | Chunking) => refuse("Error: nested MAIL command"),
        (Rcpt, Fresh | Greeted) | (Data | Bdat, Greeted) => refuse("Error: need MAIL command"),
        (Rcpt, Chunking) => refuse("Error: RCPT after message data"),
        (Data, Chunking) => refuse("Error: DATA after BDAT"),
        (StartTls, Envelope | Chunking) => {
            refuse("Error: STARTTLS not allowed inside a mail transaction")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as a picture: one row per verb, one column per phase,
    /// `.` where it goes on, else the 503's text, shortened.
    #[test]
    fn the_table() {
        use Phase::*;
        use Verb::*;
        let phases = [Fresh, Greeted, Envelope, Chunking];
        let rows: [(Verb, [&str; 4]); 15] = [
            (Helo, [".", ".", ".", "."]),
            (Ehlo, [".", ".", ".", "."]),
            (Mail, ["HELO first", ".", "nested", "nested"]),
            (Rcpt, ["need MAIL", "need MAIL", ".", "after data"]),
            (Data, ["HELO first", "need MAIL", ".", "after BDAT"]),
            (Bdat, ["HELO first", "need MAIL", ".", "."]),
            (Rset, [".", ".", ".", "."]),
            (Noop, [".", ".", ".", "."]),
            (Quit, [".", ".", ".", "."]),
            (Help, [".", ".", ".", "."]),
            (Vrfy, [".", ".", ".", "."]),
            (Expn, [".", ".", ".", "."]),
            (StartTls, [".", ".", "in transaction", "in transaction"]),
            (
                Auth,
                [
                    "EHLO first",
                    ".",
                    "AUTH in transaction",
                    "AUTH in transaction",
                ],
            ),
            (Unoffered, [".", ".", ".", "."]),
        ];
        let short = |r: Reply| {
            let text = r.lines().next().unwrap().to_string();
            assert_eq!(r.code(), 503);
            match text.as_str() {
                "Error: send HELO/EHLO first" => "HELO first",
                "Error: nested MAIL command" => "nested",
                "Error: need MAIL command" => "need MAIL",
                "Error: RCPT after message data" => "after data",
                "Error: DATA after BDAT" => "after BDAT",
                "Error: STARTTLS not allowed inside a mail transaction" => "in transaction",
                "Error: send EHLO first" => "EHLO first",
                "Error: AUTH not allowed inside a mail transaction" => "AUTH in transaction",
                other => panic!("{other}"),
            }
        };
        for (verb, want) in rows {
            for (phase, want) in phases.into_iter().zip(want) {
                let got = check(verb, phase).map_or_else(short, |()| ".");
                assert_eq!(got, want, "{verb:?} in {phase:?}");
            }
        }
    }
}
