//! The relay's side of the queue: threads of their own (`[relay]
//! connections` of them, one connection to the relay each) that take
//! messages from the runner, send their remote recipients to the relay,
//! append what became of them to their queue files, and hand them back.
//! Local delivery goes on meanwhile, whatever the relay does: a relay that
//! hangs holds up only mail for the relay.
//!
//! While a message is out here the runner leaves its file alone, so that
//! each file has one writer at a time. A connection carries the messages
//! that come one after another (RSET between them), and is closed when no
//! more come. A relay that could not be reached is not
//! tried again for [`DOWN_FOR`]: the messages that come meanwhile are
//! deferred with the same reason, instead of each waiting out its own
//! timeouts.

use super::envelope::{Handed, Notify, Record, Ret};
use super::store::{Entry, Place, Queue};
use crate::clock::SYSTEM;
use crate::delivery::Local;
use crate::relay::{self, Relay};
use crate::smtp::address::Mailbox;
use crate::smtp::trace::Clock;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a relay that could not be reached is left alone.
const DOWN_FOR: Duration = Duration::from_secs(30);
/// How long an idle connection is kept for the next message.
const IDLE: Duration = Duration::from_secs(2);

/// What the runner sends the relay thread.
pub enum Work {
    Job(Box<Job>),
    /// Someone asked for the queue to be retried now (`queue flush`): a
    /// relay that was down is tried again at once.
    Retry,
}

/// A message to relay: its id, its file if the runner has it open, its
/// remote recipients (by their place in its envelope), and the services
/// of the moment.
pub struct Job {
    pub id: String,
    pub entry: Option<Entry>,
    pub remote: Vec<usize>,
    pub relay: Arc<Relay>,
    pub local: Arc<Local>,
}

/// The last failure to reach the relay, and when it happened: shared by
/// the connections, since the relay is down for all of them.
type Down = Arc<Mutex<Option<(relay::Failed, Instant)>>>;

struct Outbound {
    queue: Queue,
    session: Option<relay::Session>,
    down: Down,
}

/// A job handed back: its id, its file with what the relay said appended
/// (unless the message had left `active/`), whether that is recorded
/// (when it is not, the message must not be tried again soon: the relay
/// may have it already), and which thread did it.
pub struct Done {
    pub id: String,
    pub entry: Option<Entry>,
    pub recorded: bool,
    pub worker: usize,
}

/// Starts `connections` threads, each with a connection of its own to
/// the relay and a channel for its jobs (returned, in order: the runner
/// gives the first ones work first, so that more connections are opened
/// only when messages wait); they end when the runner drops its ends.
/// Each job done is sent back on `done`, with the thread's number.
pub fn start(
    queue: &Queue,
    connections: usize,
    done: &Sender<Done>,
) -> std::io::Result<Vec<Sender<Work>>> {
    let down = Down::default();
    let mut workers = Vec::new();
    for n in 0..connections.max(1) {
        let o = Outbound {
            queue: queue.clone(),
            session: None,
            down: down.clone(),
        };
        let (tx, jobs) = crossbeam_channel::bounded(64);
        let done = done.clone();
        std::thread::Builder::new()
            .name(format!("relay-{n}"))
            .spawn(move || run(o, n, jobs, done))?;
        workers.push(tx);
    }
    Ok(workers)
}

fn run(mut o: Outbound, worker: usize, jobs: Receiver<Work>, done: Sender<Done>) {
    loop {
        let mut job = match jobs.recv_timeout(IDLE) {
            Ok(Work::Job(job)) => *job,
            Ok(Work::Retry) => {
                *o.down.lock().unwrap_or_else(|e| e.into_inner()) = None;
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {
                o.hang_up();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                o.hang_up();
                return;
            }
        };
        let (entry, recorded) = o.send(&mut job);
        let back = Done {
            id: job.id,
            entry,
            recorded,
            worker,
        };
        if done.send(back).is_err() {
            return;
        }
    }
}

impl Outbound {
    fn hang_up(&mut self) {
        if let Some(session) = self.session.take() {
            session.close();
        }
    }

    /// Relays one message and records what became of its recipients;
    /// its file, and false if that could not be recorded.
    fn send(&mut self, job: &mut Job) -> (Option<Entry>, bool) {
        let id = job.id.as_str();
        // Deleted or held since the runner looked, or unreadable: the
        // runner sees to it when it is handed back.
        let entry = match job.entry.take() {
            Some(e) if self.queue.holds(Place::Active, id) => Some(e),
            Some(_) => None,
            None => self.queue.open(Place::Active, id).ok(),
        };
        let Some(mut e) = entry else {
            return (None, true);
        };
        let now = SYSTEM.now().secs;
        let records = self.relay_out(&job.relay, &job.local, &e, &job.remote, now);
        match e.append(&records) {
            Ok(()) => (Some(e), true),
            Err(err) => {
                log::error!("{id}: recording what the relay said failed, retrying later: {err}");
                (None, false)
            }
        }
    }

    /// The open session, or a new one; a relay found down a moment ago
    /// is not tried again yet.
    fn session(&mut self, relay: &Arc<Relay>) -> Result<relay::Session, relay::Failed> {
        if let Some(s) = self.session.take() {
            return Ok(s);
        }
        if let Some((f, at)) = &*self.down.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < DOWN_FOR {
                return Err(f.clone());
            }
        }
        relay.open().inspect_err(|f| {
            *self.down.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((f.clone(), Instant::now()));
        })
    }

    /// Sends the message to the relay for the recipients `remote`; the
    /// records of what became of them.
    fn relay_out(
        &mut self,
        relay: &Arc<Relay>,
        local: &Local,
        e: &Entry,
        remote: &[usize],
        now: i64,
    ) -> Vec<Record> {
        let env = &e.env;
        let recipients: Vec<relay::Recipient<'_>> = remote
            .iter()
            .map(|&n| relay::Recipient {
                address: &env.recipients[n].address,
                notify: env.recipients[n].notify.map(Notify::words),
                orcpt: env.recipients[n].orcpt.as_deref(),
            })
            .collect();
        let is_local = |address: &str| {
            !address.contains('@')
                || Mailbox::parse(address)
                    .is_ok_and(|m| crate::delivery::is_local(local.config(), &m.domain))
        };
        let ret = env.ret.map(|r| match r {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        });
        let sender = relay.sender_for(&env.sender, is_local);
        // Where the sender is rewritten, so is a From: naming a local
        // address alone: the relay may check both.
        let rewritten = (sender != env.sender)
            .then(|| from_rewritten(e.body(), sender, is_local))
            .flatten();
        let (head, body) = match &rewritten {
            Some((head, rest)) => (&head[..], *rest),
            None => (&[][..], e.body()),
        };
        let msg = relay::Outgoing {
            id: &env.id,
            sender,
            recipients: &recipients,
            dsn: crate::smtp::client::Dsn {
                ret,
                envid: env.envid.as_deref(),
            },
            head,
            body,
        };
        let sent = self.session(relay).and_then(|mut session| {
            let r = session.send(&msg);
            // A session whose message failed for its own sake (a reply
            // about this message) can carry the next one; a broken one
            // cannot.
            if r.as_ref().map_or_else(|f| !f.broken, |_| true) {
                self.session = Some(session);
            }
            r
        });
        let mut records = Vec::new();
        let outcomes: Vec<relay::Outcome> = match sent {
            Ok(o) => o,
            Err(f) => {
                log::info!("{}: relay: {}", env.id, f.reason);
                remote
                    .iter()
                    .map(|_| relay::Outcome::Failed(f.clone()))
                    .collect()
            }
        };
        for (&n, outcome) in remote.iter().zip(outcomes) {
            let address = env.recipients[n].address.clone();
            match outcome {
                relay::Outcome::Sent { dsn, .. } => {
                    records.push(Record::Sent {
                        rcpt: n,
                        at: now,
                        dest: address,
                        how: if dsn { Handed::Passed } else { Handed::Relayed },
                    });
                    records.push(Record::Done { rcpt: n, at: now });
                }
                relay::Outcome::Failed(f) if f.permanent => {
                    log::info!("{}: <{address}> failed: {}", env.id, f.reason);
                    records.push(Record::Failed {
                        rcpt: n,
                        at: now,
                        status: f.status,
                        dest: address,
                        notify: None,
                        reason: f.reason,
                    });
                    records.push(Record::Done { rcpt: n, at: now });
                }
                relay::Outcome::Failed(f) => records.push(Record::Deferred {
                    rcpt: n,
                    at: now,
                    status: f.status,
                    reason: f.reason,
                }),
            }
        }
        records
    }
}

/// The message's header section with its From: rewritten to `to`, and
/// the rest of the message after it; `None` when there is nothing to
/// rewrite (or the header is too long to read here).
fn from_rewritten<'a>(
    body: crate::delivery::Body<'a>,
    to: &str,
    local: impl Fn(&str) -> bool,
) -> Option<(Vec<u8>, crate::delivery::Body<'a>)> {
    const MAX: usize = 64 * 1024;
    let buf = body.read_head(MAX).ok()?;
    let split = crate::smtp::header::split(&buf);
    if split.header == buf.len() && (body.len() as usize) > buf.len() {
        return None;
    }
    let head = relay::rewrite_from(&buf[..split.header], to, local)?;
    Some((head, body.after(split.header as u64)))
}
