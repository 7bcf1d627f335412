//! What senders are told of a message received over SMTP. When some
//! copies of a message are made and others are not, whoever should hear
//! of the failures (the sender, or a list's owner) gets a delivery status
//! notification (RFC 3464, composed in [`crate::queue::dsn`]); a sender
//! who asked for it (NOTIFY=SUCCESS, RFC 3461) hears of the copies made
//! too, and one who asked for NOTIFY=NEVER hears nothing.
//!
//! [`Immediate`] is the policy for a message whose client waits for the
//! reply: every copy is tried ([`Local::attempt`]); if all were made they
//! are kept, if none was the client is told; if some were, the
//! notifications are written and held too (for a local sender), or queued
//! for the relay (for a remote one, when there is a relay), then
//! everything is kept. Where a notification cannot be made (a null
//! sender, a remote one without a relay, a full disk), everything is taken
//! back and the client told, so that its own server reports it: a copy is
//! never dropped without someone hearing of it. Only pipes, which cannot
//! be taken back, may then run twice.

use crate::clock::SYSTEM;
use crate::delivery::local::{Attempt, Held};
use crate::delivery::plan::{self, Decision, Outcome, Status};
use crate::delivery::spool::Spool;
use crate::delivery::{Delivery, DeliveryError, Local, Lookup, Message, Target};
use crate::queue::envelope::{Handed, Rcpt, Record};
use crate::queue::{dsn, Notice, Outbox};
use crate::smtp::address::ForwardPath;
use crate::smtp::command::Ret;
use crate::smtp::failure;
use crate::smtp::trace::Clock;
use std::sync::Arc;
use std::time::Instant;

/// Delivery while the client waits for its reply.
pub struct Immediate {
    local: Arc<Local>,
    /// The queue: for copies that failed temporarily while others were
    /// made, for members elsewhere, and for notices to remote senders
    /// when there is a relay to take them.
    outbox: Option<Outbox>,
}

impl Immediate {
    pub fn new(local: Arc<Local>, outbox: Option<Outbox>) -> Immediate {
        Immediate { local, outbox }
    }
}

impl Delivery for Immediate {
    fn lookup(&self, rcpt: &ForwardPath) -> Lookup {
        self.local.lookup(rcpt)
    }

    fn lookup_relayed(&self, rcpt: &ForwardPath) -> Lookup {
        crate::delivery::through_relay(self.local.config(), rcpt)
            .unwrap_or_else(|| self.local.lookup(rcpt))
    }

    fn deliver(&self, msg: &Message<'_>, deadline: Instant) -> Result<(), DeliveryError> {
        let local = &*self.local;
        let a = local.attempt(msg, deadline);
        // Members elsewhere are copies too, made by queueing the message
        // for them just before the local ones are committed.
        let forwards = forwards(msg);
        let failure = match plan::decide(&a.failed, a.kept() + forwards.len()) {
            Decision::Keep => {
                if let Err(e) = self.queue_rest(msg, forwards, &[]) {
                    local.abort(a.held, deadline);
                    return Err(e);
                }
                let late = failures(local.commit(a.held, msg.id, deadline));
                return self.after_commit(msg, late, deadline);
            }
            Decision::Refuse(failure) => {
                local.abort(a.held, deadline);
                return Err(failure);
            }
            Decision::Report { failure } => failure,
        };
        // Some copies are made. Those that failed temporarily are queued
        // and retried, as the client's queue would do for the message; the
        // others are reported now.
        let (later, failed): (Vec<Outcome>, Vec<Outcome>) = a
            .failed
            .into_iter()
            .partition(|o| self.outbox.is_some() && matches!(o.status, Status::Deferred(_)));
        let reported = self.reported(msg, failed);
        match self.prepare(msg, &reported, deadline, &a.held) {
            Ok(Notices::Staged(notices)) => {
                if let Err(e) = self.queue_rest(msg, forwards, &later) {
                    for n in notices {
                        local.abort(n, deadline);
                    }
                    local.abort(a.held, deadline);
                    return Err(e);
                }
                let late = failures(local.commit(a.held, msg.id, deadline));
                for n in notices {
                    // A notification that fails now is logged: it never
                    // gets one of its own.
                    local.commit(n, msg.id, deadline);
                }
                self.after_commit(msg, late, deadline)
            }
            Ok(Notices::Afterwards) => {
                if let Err(e) = self.queue_rest(msg, forwards, &later) {
                    local.abort(a.held, deadline);
                    return Err(e);
                }
                let mut failed = reported;
                failed.extend(failures(local.commit(a.held, msg.id, deadline)));
                self.after_commit(msg, failed, deadline)
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

/// The addresses elsewhere the message's recipients lead to, each with
/// what its recipient's sender asked to hear.
fn forwards(msg: &Message<'_>) -> Vec<Rcpt> {
    let mut out: Vec<Rcpt> = Vec::new();
    for (i, r) in msg.recipients.iter().enumerate() {
        for to in r.forwards() {
            if !out.iter().any(|o| o.address == to) {
                out.push(Rcpt {
                    notify: msg.dsn.of(i).notify,
                    ..Rcpt::new(to)
                });
            }
        }
    }
    out
}

fn failures(outcomes: Vec<Outcome>) -> Vec<Outcome> {
    outcomes
        .into_iter()
        .filter(|o| o.status != Status::Delivered)
        .collect()
}

/// The notifications for a message's failed copies.
enum Notices {
    /// Written and held (or queued), to be committed with the message.
    Staged(Vec<Held>),
    /// To be written once the message's own copies are committed.
    Afterwards,
}

/// Where one notification goes.
enum Route {
    Here(crate::delivery::Recipient),
    Queue,
}

impl Immediate {
    /// Queues what is left of the message in one queue file: for the
    /// members elsewhere (`forwards`), and for the recipients some of
    /// whose copies failed temporarily (`later`), with the copies made
    /// recorded, so that a retry makes only the others.
    fn queue_rest(
        &self,
        msg: &Message<'_>,
        mut recipients: Vec<Rcpt>,
        later: &[Outcome],
    ) -> Result<(), DeliveryError> {
        if recipients.is_empty() && later.is_empty() {
            return Ok(());
        }
        let temporary = |why: String| DeliveryError::new(failure::Failure::Temporary, why);
        let outbox = self
            .outbox
            .as_ref()
            .ok_or_else(|| temporary("nowhere to queue the rest".into()))?;
        let forwards = recipients.len();
        let now = SYSTEM.now().secs;
        let mut records = Vec::new();
        for (i, r) in msg.recipients.iter().enumerate() {
            let failed: Vec<&str> = later
                .iter()
                .filter(|o| o.original == r.address)
                .map(|o| o.recipient.as_str())
                .collect();
            if failed.is_empty() {
                continue;
            }
            let n = recipients.len();
            let params = msg.dsn.of(i);
            recipients.push(Rcpt {
                notify: params.notify,
                orcpt: params.orcpt,
                ..Rcpt::new(r.address.clone())
            });
            // Everything else it leads to is made (or queued above).
            records.extend(
                r.dests
                    .iter()
                    .filter(|d| !failed.contains(&d.address.as_str()))
                    .map(|d| Record::Sent {
                        rcpt: n,
                        at: now,
                        dest: d.address.clone(),
                        how: Handed::Passed,
                    }),
            );
        }
        let id = outbox
            .put(msg.reverse_path, recipients, msg.body, &records)
            .map_err(|e| temporary(format!("queueing the rest: {e}")))?;
        log::info!(
            "{}: queued as {id}: {forwards} members elsewhere, {} copies to retry",
            msg.id,
            later.len()
        );
        Ok(())
    }

    /// The failures that are to be reported: not those of a recipient
    /// whose sender asked never to hear of failures (NOTIFY without
    /// FAILURE), which are logged only.
    fn reported(&self, msg: &Message<'_>, failed: Vec<Outcome>) -> Vec<Outcome> {
        failed
            .into_iter()
            .filter(|o| {
                let wanted = msg
                    .recipients
                    .iter()
                    .position(|r| r.address == o.original)
                    .and_then(|i| msg.dsn.of(i).notify)
                    .is_none_or(|n| n.failure);
                if !wanted {
                    log::info!(
                        "{}: <{}> failed; NOTIFY says nobody is told",
                        msg.id,
                        o.recipient
                    );
                }
                wanted
            })
            .collect()
    }

    /// Copies that failed after others were committed (or whose
    /// notification had to wait for that): the rest cannot be taken back
    /// any more, so these are reported if that can be done, else the
    /// client is told (and a retry duplicates). Then the successes the
    /// sender asked to hear of are reported.
    fn after_commit(
        &self,
        msg: &Message<'_>,
        late: Vec<Outcome>,
        deadline: Instant,
    ) -> Result<(), DeliveryError> {
        let late = self.reported(msg, late);
        if !late.is_empty() {
            match self.prepare(msg, &late, deadline, &Held::default()) {
                Ok(Notices::Staged(notices)) => {
                    for n in notices {
                        self.local.commit(n, msg.id, deadline);
                    }
                }
                Ok(Notices::Afterwards) => unreachable!("nothing is held"),
                Err(why) => {
                    log::error!(
                        "{}: copies failed after others were kept, and {why}",
                        msg.id
                    );
                    return Err(summary(&late));
                }
            }
        }
        self.successes(msg, &late, deadline);
        Ok(())
    }

    /// Tells the sender of the recipients that have the message, where
    /// it asked to hear of them (NOTIFY=SUCCESS); logged when it cannot.
    fn successes(&self, msg: &Message<'_>, failed: &[Outcome], deadline: Instant) {
        if msg.reverse_path.is_empty() {
            return;
        }
        let entries: Vec<dsn::Entry> = msg
            .recipients
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                msg.dsn.of(*i).notify.is_some_and(|n| n.success)
                    && !failed.iter().any(|o| o.original == r.address)
            })
            .map(|(_, r)| dsn::Entry {
                action: dsn::Action::Delivered,
                recipient: r.address.clone(),
                original: None,
                status: "2.0.0".into(),
                diagnostic: String::new(),
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let sender = msg.reverse_path;
        let sent = match self.route(sender) {
            Some(Route::Here(to)) => self
                .stage(msg, dsn::Kind::Success, sender, &to, &entries, deadline)
                .map(|held| {
                    self.local.commit(held, msg.id, deadline);
                }),
            Some(Route::Queue) => self.enqueue(msg, dsn::Kind::Success, sender, &entries),
            None => Err(format!("<{sender}> cannot be reached from here")),
        };
        if let Err(why) = sent {
            log::warn!("{}: the success notice to <{sender}> failed: {why}", msg.id);
        }
    }

    /// How a notification reaches `sender`, if it can.
    fn route(&self, sender: &str) -> Option<Route> {
        let relay = self.outbox.is_some() && self.local.config().relay.is_some();
        match self.local.reachable(sender) {
            Some(to) => Some(Route::Here(to)),
            None if !sender.is_empty() && relay => Some(Route::Queue),
            None => None,
        }
    }

    /// Writes and holds one notification per sender for the failed
    /// copies (queueing those for remote senders last, once every local
    /// one is held); `Err` (with everything written taken back) if any
    /// cannot be made.
    fn prepare(
        &self,
        msg: &Message<'_>,
        failed: &[Outcome],
        deadline: Instant,
        held: &Held,
    ) -> Result<Notices, String> {
        let local = &*self.local;
        let mut senders: Vec<&str> = failed.iter().map(|f| f.notify.as_str()).collect();
        senders.sort_unstable();
        senders.dedup();
        let mut plan = Vec::new();
        for sender in senders {
            match self.route(sender) {
                Some(route) => plan.push((sender, route)),
                None if sender.is_empty() => {
                    return Err("the null sender cannot be notified".into())
                }
                None => {
                    return Err(format!(
                        "<{sender}>, which is not local, cannot be notified (no [relay])"
                    ))
                }
            }
        }
        // A notification for a mailbox this message holds locked (the
        // sender wrote to itself) can only be written once that copy is
        // committed; the copy just worked, so it is very likely to.
        let locked = |to: &crate::delivery::Recipient| {
            to.dests
                .iter()
                .any(|d| matches!(d.target, Target::Mbox(_)) && held.holds(&d.target))
        };
        if plan
            .iter()
            .any(|(_, r)| matches!(r, Route::Here(to) if locked(to)))
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
        let entries_for = |sender: &str| -> Vec<dsn::Entry> {
            failed
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
                .collect()
        };
        for (sender, route) in &plan {
            if let Route::Here(to) = route {
                match self.stage(
                    msg,
                    dsn::Kind::Failure,
                    sender,
                    to,
                    &entries_for(sender),
                    deadline,
                ) {
                    Ok(h) => out.push(h),
                    Err(why) => return give_up(out, why),
                }
            }
        }
        for (sender, route) in &plan {
            if let Route::Queue = route {
                if let Err(why) =
                    self.enqueue(msg, dsn::Kind::Failure, sender, &entries_for(sender))
                {
                    return give_up(out, why);
                }
            }
        }
        Ok(Notices::Staged(out))
    }

    /// The notification's text.
    fn compose(
        &self,
        msg: &Message<'_>,
        kind: dsn::Kind,
        id: &str,
        to: &str,
        entries: &[dsn::Entry],
    ) -> Result<Vec<u8>, String> {
        let (returned, full) = returned(msg, kind)?;
        Ok(dsn::compose(&dsn::Report {
            hostname: &self.local.config().hostname,
            id,
            original_id: msg.id,
            to,
            arrival: msg.received,
            now: SYSTEM.now(),
            kind,
            entries,
            returned: &returned,
            full,
            envid: msg.dsn.envid,
        }))
    }

    /// Writes and holds a notification to the local recipient `to`.
    fn stage(
        &self,
        msg: &Message<'_>,
        kind: dsn::Kind,
        sender: &str,
        to: &crate::delivery::Recipient,
        entries: &[dsn::Entry],
        deadline: Instant,
    ) -> Result<Held, String> {
        let local = &*self.local;
        let id = SYSTEM.queue_id();
        let text = self.compose(msg, kind, &id, sender, entries)?;
        let mut body = Spool::create(&local.config().spool_dir)
            .map_err(|e| format!("spooling the notification: {e}"))?;
        body.write(&text)
            .map_err(|e| format!("spooling the notification: {e}"))?;
        // With a null sender: a notification is never reported on.
        let Attempt { held, failed, .. } = local.attempt(
            &Message {
                id: &id,
                reverse_path: "",
                recipients: std::slice::from_ref(to),
                body: body.body(),
                received: SYSTEM.now(),
                dsn: crate::delivery::Dsn::default(),
            },
            deadline,
        );
        if let Some(f) = failed.first() {
            let why = f.status.error().map_or("", |e| e.reason.as_str());
            local.abort(held, deadline);
            return Err(format!("the notification to <{sender}> failed: {why}"));
        }
        log::info!(
            "{}: notification {id} to <{sender}> for {} recipients",
            msg.id,
            entries.len()
        );
        Ok(held)
    }

    /// Queues a notification to a remote sender, for the relay.
    fn enqueue(
        &self,
        msg: &Message<'_>,
        kind: dsn::Kind,
        sender: &str,
        entries: &[dsn::Entry],
    ) -> Result<(), String> {
        let outbox = self.outbox.as_ref().ok_or("there is no relay")?;
        let (returned, full) = returned(msg, kind)?;
        outbox
            .notice(
                self.local.config(),
                &Notice {
                    original_id: msg.id,
                    arrival: msg.received,
                    envid: msg.dsn.envid,
                    kind,
                    returned: &returned,
                    full,
                    to: sender,
                    notify: None,
                    entries,
                },
            )
            .map(drop)
            .map_err(|e| format!("queueing the notification to <{sender}>: {e}"))
    }
}

/// What a notification returns of the message, and whether that is all
/// of it: the header, or everything for a failure when the sender asked
/// for RET=FULL.
fn returned(msg: &Message<'_>, kind: dsn::Kind) -> Result<(Vec<u8>, bool), String> {
    let full = kind == dsn::Kind::Failure && msg.dsn.ret == Some(Ret::Full);
    let read = if full {
        let mut all = Vec::with_capacity(msg.body.len() as usize);
        std::io::Read::read_to_end(&mut msg.body.reader(), &mut all).map(|_| all)
    } else {
        dsn::read_header(msg.body)
    };
    read.map(|r| (r, full))
        .map_err(|e| format!("reading the spool: {e}"))
}

fn summary(failed: &[Outcome]) -> DeliveryError {
    failure::summary(failed.iter().filter_map(|o| o.status.error()))
        .expect("only failures are summed up")
}
