//! What senders are told. When some copies of a message are made and
//! others are not, whoever should hear of the failures (the sender, or a
//! list's owner) gets a delivery status notification (RFC 3464, composed
//! in [`dsn`]), delivered here like any message.
//!
//! [`Immediate`] is the policy for a message whose client waits for the
//! reply: every copy is tried ([`Local::attempt`]); if all were made they
//! are kept, if none was the client is told; if some were, the
//! notifications are written and held too, then everything is kept. Where
//! a notification cannot be made (a null sender, a remote one, a full
//! disk), everything is taken back and the client told, so that its own
//! server reports it: a copy is never dropped without someone hearing of
//! it. Only pipes, which cannot be taken back, may then run twice.

pub mod dsn;

use crate::clock::SYSTEM;
use crate::delivery::local::{Attempt, Held};
use crate::delivery::plan::{self, Decision, Outcome, Status};
use crate::delivery::spool::Spool;
use crate::delivery::{Delivery, DeliveryError, Local, Lookup, Message, Target};
use crate::smtp::address::ForwardPath;
use crate::smtp::failure;
use crate::smtp::trace::Clock;
use std::sync::Arc;
use std::time::Instant;

/// Delivery while the client waits for its reply.
pub struct Immediate {
    local: Arc<Local>,
}

impl Immediate {
    pub fn new(local: Arc<Local>) -> Immediate {
        Immediate { local }
    }
}

impl Delivery for Immediate {
    fn lookup(&self, rcpt: &ForwardPath) -> Lookup {
        self.local.lookup(rcpt)
    }

    fn deliver(&self, msg: &Message<'_>, deadline: Instant) -> Result<(), DeliveryError> {
        let local = &*self.local;
        let a = local.attempt(msg, deadline);
        let failure = match plan::decide(&a.failed, a.kept()) {
            Decision::Keep => {
                let late = failures(local.commit(a.held, msg.id, deadline));
                return after_commit(local, msg, late, deadline);
            }
            Decision::Refuse(failure) => {
                local.abort(a.held, deadline);
                return Err(failure);
            }
            Decision::Report { failure } => failure,
        };
        match prepare(local, msg, &a.failed, deadline, &a.held) {
            Ok(Notices::Staged(notices)) => {
                let late = failures(local.commit(a.held, msg.id, deadline));
                for n in notices {
                    // A notification that fails now is logged: it never
                    // gets one of its own.
                    local.commit(n, msg.id, deadline);
                }
                after_commit(local, msg, late, deadline)
            }
            Ok(Notices::Afterwards) => {
                let mut failed = a.failed;
                failed.extend(failures(local.commit(a.held, msg.id, deadline)));
                after_commit(local, msg, failed, deadline)
            }
            Err(why) => {
                log::info!(
                    "{}: some copies failed and {why}; taking the message back whole",
                    msg.id
                );
                local.abort(a.held, deadline);
                if a.pipes > 0 {
                    log::warn!(
                        "{}: {} pipe deliveries already ran, and run again if the client retries",
                        msg.id,
                        a.pipes
                    );
                }
                Err(failure)
            }
        }
    }
}

fn failures(outcomes: Vec<Outcome>) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .filter(|o| o.status != Status::Delivered)
        .collect()
}

/// The notifications for a message's failed copies.
enum Notices {
    /// Written and held, to be committed with the message.
    Staged(Vec<Held>),
    /// To be written once the message's own copies are committed.
    Afterwards,
}

/// Copies that failed after others were committed (or whose notification
/// had to wait for that): the rest cannot be taken back any more, so these
/// are reported if that can be done, else the client is told (and a retry
/// duplicates).
fn after_commit(
    local: &Local,
    msg: &Message<'_>,
    late: Vec<Outcome>,
    deadline: Instant,
) -> Result<(), DeliveryError> {
    if late.is_empty() {
        return Ok(());
    }
    match prepare(local, msg, &late, deadline, &Held::default()) {
        Ok(Notices::Staged(notices)) => {
            for n in notices {
                local.commit(n, msg.id, deadline);
            }
            Ok(())
        }
        Ok(Notices::Afterwards) => unreachable!("nothing is held"),
        Err(why) => {
            log::error!(
                "{}: copies failed after others were kept, and {why}",
                msg.id
            );
            Err(summary(&late))
        }
    }
}

fn summary(failed: &[Outcome]) -> DeliveryError {
    failure::summary(failed.iter().filter_map(|o| o.status.error()))
        .expect("only failures are summed up")
}

/// Writes and holds one notification per sender for the failed copies;
/// `Err` (with everything written taken back) if any cannot be delivered
/// in full.
fn prepare(
    local: &Local,
    msg: &Message<'_>,
    failed: &[Outcome],
    deadline: Instant,
    held: &Held,
) -> Result<Notices, String> {
    let header = dsn::read_header(msg.body).map_err(|e| format!("reading the spool: {e}"))?;
    let mut senders: Vec<&str> = failed.iter().map(|f| f.notify.as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    let mut plan = Vec::new();
    for sender in senders {
        match local.reachable(sender) {
            Some(to) => plan.push((sender, to)),
            None if sender.is_empty() => return Err("the null sender cannot be notified".into()),
            None => {
                return Err(format!(
                    "<{sender}>, which is not local, cannot be notified"
                ))
            }
        }
    }
    // A notification for a mailbox this message holds locked (the sender
    // wrote to itself) can only be written once that copy is committed;
    // the copy just worked, so it is very likely to.
    if plan
        .iter()
        .flat_map(|(_, to)| &to.dests)
        .any(|d| matches!(d.target, Target::Mbox(_)) && held.holds(&d.target))
    {
        return Ok(Notices::Afterwards);
    }
    let mut out: Vec<Held> = Vec::new();
    let give_up = |out: Vec<Held>, why: String| {
        for h in out {
            local.abort(h, deadline);
        }
        Err(why)
    };
    let config = local.config();
    for (sender, to) in plan {
        let report: Vec<dsn::Entry> = failed
            .iter()
            .filter(|f| f.notify == sender)
            .map(|f| dsn::Entry {
                action: dsn::Action::Failed,
                recipient: f.recipient.clone(),
                original: (f.original != f.recipient).then(|| f.original.clone()),
                status: f.code.to_string(),
                diagnostic: f
                    .status
                    .error()
                    .map_or_else(String::new, |e| e.reason.clone()),
            })
            .collect();
        let now = SYSTEM.now();
        let id = SYSTEM.queue_id();
        let text = dsn::compose(&dsn::Report {
            hostname: &config.hostname,
            id: &id,
            original_id: msg.id,
            to: sender,
            arrival: msg.received,
            now,
            kind: dsn::Kind::Failure,
            entries: &report,
            returned: &header,
            full: false,
            envid: None,
        });
        let written =
            Spool::create(&config.spool_dir).and_then(|mut body| body.write(&text).map(|()| body));
        let body = match written {
            Ok(b) => b,
            Err(e) => return give_up(out, format!("spooling the notification: {e}")),
        };
        // With a null sender: a notification is never reported on.
        let Attempt { held, failed, .. } = local.attempt(
            &Message {
                id: &id,
                reverse_path: "",
                recipients: std::slice::from_ref(&to),
                body: body.body(),
                received: now,
            },
            deadline,
        );
        out.push(held);
        if let Some(f) = failed.first() {
            let why = f.status.error().map_or("", |e| e.reason.as_str());
            return give_up(out, format!("the notification to <{sender}> failed: {why}"));
        }
        log::info!(
            "{}: notification {id} to <{sender}> for {} recipients",
            msg.id,
            report.len()
        );
    }
    Ok(Notices::Staged(out))
}
