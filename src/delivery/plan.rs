//! What delivering one message means before any file is touched, and
//! what to make of it once every copy was tried: which copies, in what
//! order, under which envelope sender, with which header lines; what
//! became of each ([`Outcome`]); and the decision for the message as a
//! whole ([`decide`]). Pure, and tested as tables.

use super::{Dest, Recipient, Target};
use crate::smtp::failure::{self, DeliveryError};
use std::collections::HashSet;

/// One copy of a message to make.
#[derive(Debug)]
pub struct Copy<'a> {
    /// The recipient the client gave, as resolved, that led here.
    pub recipient: &'a Recipient,
    pub dest: &'a Dest,
    /// The envelope sender this copy carries (`Return-Path:`), who also
    /// hears of its failure.
    pub sender: String,
}

impl Copy<'_> {
    /// `Return-Path:` and `Delivered-To:`, as Postfix and qmail write them,
    /// with the message's own line ends (`crlf` for one stored as sent).
    pub fn prefix(&self, crlf: bool) -> String {
        let end = if crlf { "\r\n" } else { "\n" };
        format!(
            "Return-Path: <{}>{end}Delivered-To: {}{end}",
            self.sender, self.dest.address
        )
    }
}

/// The copies of a message: one per mailbox, however many recipients lead
/// there; pipes first (they cannot be taken back, and no mailbox is held
/// locked while they run), then Maildirs, then mboxes in the order of
/// their paths (so that two deliveries take mbox locks in the same order
/// and never wait for each other).
pub fn copies<'a>(reverse_path: &str, recipients: &'a [Recipient]) -> Vec<Copy<'a>> {
    let mut seen = HashSet::new();
    let mut copies: Vec<Copy<'a>> = Vec::new();
    for r in recipients {
        // Addresses elsewhere are the queue's: no copy is made here.
        for d in r
            .dests
            .iter()
            .filter(|d| !matches!(d.target, Target::Forward(_)))
        {
            if seen.insert(&d.target) {
                copies.push(Copy {
                    recipient: r,
                    dest: d,
                    sender: sender_of(reverse_path, d.sender.as_deref()),
                });
            }
        }
    }
    copies.sort_by(|a, b| {
        let rank = |t: &'a Target| match t {
            Target::Pipe(_) | Target::Discard | Target::Forward(_) => (0, None),
            Target::Maildir(_) => (1, None),
            Target::Mbox(p) => (2, Some(p)),
        };
        rank(&a.dest.target).cmp(&rank(&b.dest.target))
    });
    copies
}

/// The envelope sender of a copy, or who hears of a list member's
/// failure: a list's owner replaces the message's sender, but a null
/// sender stays null (a list's owner is not told of a bounce).
pub fn sender_of(reverse_path: &str, list_owner: Option<&str>) -> String {
    match (reverse_path, list_owner) {
        ("", _) | (_, None) => reverse_path.to_string(),
        (_, Some(owner)) => owner.to_string(),
    }
}

/// What became of one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The recipient the client gave, as resolved.
    pub original: String,
    /// The copy's own address, after alias expansion.
    pub recipient: String,
    /// Who is told if it failed: a list's owner or the sender; empty for
    /// nobody (the null sender).
    pub notify: String,
    pub status: Status,
    /// The RFC 3463 status a delivery report gives it (`5.1.1` for a
    /// mailbox that does not exist, say).
    pub code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Delivered,
    /// Not delivered; trying again later may work.
    Deferred(DeliveryError),
    /// Not delivered; trying again cannot help.
    Failed(DeliveryError),
}

impl Status {
    /// A failure, by its class.
    pub fn of(error: DeliveryError) -> Status {
        if error.kind.is_permanent() {
            Status::Failed(error)
        } else {
            Status::Deferred(error)
        }
    }

    pub fn error(&self) -> Option<&DeliveryError> {
        match self {
            Status::Delivered => None,
            Status::Deferred(e) | Status::Failed(e) => Some(e),
        }
    }

    /// The RFC 3463 status a report gives it, by its class.
    pub fn code(&self) -> &'static str {
        self.error().map_or("2.0.0", |e| e.kind.status())
    }
}

/// What to do with a message once every copy was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every copy is made: keep them all.
    Keep,
    /// No copy is made: nothing is kept, and the failure (the most
    /// hopeful class among the copies') is the message's.
    Refuse(DeliveryError),
    /// Some copies are made and some are not. Those who should hear of the
    /// failures are told and the rest is kept; if they cannot be told, the
    /// copies are taken back and the message fails with `failure`.
    Report { failure: DeliveryError },
}

/// The decision for a message whose failed copies are `failed` and of
/// which `kept` copies were made (pipes that ran, copies written and
/// held; a copy thrown away on purpose, to /dev/null, is neither).
pub fn decide(failed: &[Outcome], kept: usize) -> Decision {
    let Some(failure) = failure::summary(failed.iter().filter_map(|o| o.status.error())) else {
        return Decision::Keep;
    };
    if kept == 0 {
        Decision::Refuse(failure)
    } else {
        Decision::Report { failure }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::RunAs;
    use crate::smtp::failure::Failure;

    fn dest(target: Target, address: &str, owner: Option<&str>) -> Dest {
        Dest {
            target,
            run_as: RunAs::Server,
            address: address.into(),
            sender: owner.map(str::to_string),
        }
    }

    fn recipient(address: &str, dests: Vec<Dest>) -> Recipient {
        Recipient {
            address: address.into(),
            full_name: None,
            dests,
            missing: Vec::new(),
        }
    }

    #[test]
    fn copies_are_one_per_mailbox_pipes_first_and_mboxes_in_path_order() {
        let staff = recipient(
            "staff@example.org",
            vec![
                dest(Target::Mbox("/m/zed".into()), "zed@example.org", None),
                dest(Target::Maildir("/m/amy".into()), "amy@example.org", None),
                dest(Target::Mbox("/m/bob".into()), "bob@example.org", None),
                dest(Target::Pipe("cat".into()), "staff@example.org", None),
            ],
        );
        let amy = recipient(
            "amy@example.org",
            vec![
                dest(Target::Maildir("/m/amy".into()), "amy@example.org", None),
                dest(Target::Discard, "amy@example.org", None),
            ],
        );
        let all = [staff, amy];
        let got: Vec<(&Target, &str)> = copies("s@example.org", &all)
            .iter()
            .map(|c| (&c.dest.target, c.recipient.address.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (&Target::Pipe("cat".into()), "staff@example.org"),
                (&Target::Discard, "amy@example.org"),
                (&Target::Maildir("/m/amy".into()), "staff@example.org"),
                (&Target::Mbox("/m/bob".into()), "staff@example.org"),
                (&Target::Mbox("/m/zed".into()), "staff@example.org"),
            ]
        );
    }

    #[test]
    fn a_list_owner_replaces_the_sender_but_not_a_null_one() {
        let list = [recipient(
            "team@example.org",
            vec![dest(
                Target::Maildir("/m/bob".into()),
                "bob@example.org",
                Some("owner-team@example.org"),
            )],
        )];
        let sender = |from: &str| copies(from, &list)[0].sender.clone();
        assert_eq!(sender("a@b.example"), "owner-team@example.org");
        assert_eq!(sender(""), "");
        let plain = [recipient(
            "bob@example.org",
            vec![dest(
                Target::Maildir("/m/bob".into()),
                "bob@example.org",
                None,
            )],
        )];
        let c = &copies("a@b.example", &plain)[0];
        assert_eq!(c.sender, "a@b.example");
        assert_eq!(
            c.prefix(false),
            "Return-Path: <a@b.example>\nDelivered-To: bob@example.org\n"
        );
        assert_eq!(
            copies("", &plain)[0].prefix(false),
            "Return-Path: <>\nDelivered-To: bob@example.org\n"
        );
    }

    fn outcome(status: Status) -> Outcome {
        Outcome {
            original: "o@example.org".into(),
            recipient: "r@example.org".into(),
            notify: "s@example.org".into(),
            status,
            code: "x.x.x",
        }
    }

    fn failed(kind: Failure, why: &str) -> Outcome {
        outcome(Status::of(DeliveryError::new(kind, why)))
    }

    #[test]
    fn the_decision() {
        let e = DeliveryError::new;
        let cases: Vec<(Vec<Outcome>, usize, Decision)> = vec![
            (vec![], 1, Decision::Keep),
            // Only /dev/null: nothing kept, and nothing failed either.
            (vec![], 0, Decision::Keep),
            (
                vec![failed(Failure::Permanent, "p")],
                0,
                Decision::Refuse(e(Failure::Permanent, "p")),
            ),
            (
                vec![
                    failed(Failure::Permanent, "p"),
                    failed(Failure::Temporary, "t"),
                ],
                0,
                Decision::Refuse(e(Failure::Temporary, "t")),
            ),
            (
                vec![
                    failed(Failure::Temporary, "t"),
                    failed(Failure::DiskFull, "d"),
                ],
                0,
                Decision::Refuse(e(Failure::DiskFull, "d")),
            ),
            (
                vec![failed(Failure::Permanent, "p")],
                2,
                Decision::Report {
                    failure: e(Failure::Permanent, "p"),
                },
            ),
            (
                vec![outcome(Status::Delivered), failed(Failure::Temporary, "t")],
                1,
                Decision::Report {
                    failure: e(Failure::Temporary, "t"),
                },
            ),
        ];
        for (outcomes, kept, want) in cases {
            assert_eq!(decide(&outcomes, kept), want, "{outcomes:?} kept {kept}");
        }
    }

    #[test]
    fn a_status_is_deferred_or_failed_by_its_class() {
        let e = |kind| DeliveryError::new(kind, "x");
        assert!(matches!(
            Status::of(e(Failure::Temporary)),
            Status::Deferred(_)
        ));
        assert!(matches!(
            Status::of(e(Failure::DiskFull)),
            Status::Deferred(_)
        ));
        assert!(matches!(
            Status::of(e(Failure::Permanent)),
            Status::Failed(_)
        ));
        assert_eq!(Status::Delivered.error(), None);
    }
}
