//! The queue runner: one thread that takes drops from the maildrop into
//! the queue and tries each queued message when it is due. Local
//! recipients go through the same delivery as mail received over SMTP
//! (aliases, .forward, Maildir, mbox, pipes). What happened to each
//! recipient is recorded before anything else is planned; a recipient
//! that failed for good is reported to whoever should hear of it, in a
//! notice queued like any message; a message with nothing left to do
//! leaves the queue.
//!
//! When a message is due is derived from its records (the last attempt
//! and how many there were), so a restart picks up exactly where the
//! runner stopped. `queue flush` makes everything due now.

use super::dsn;
use super::envelope::{Envelope, Handed, Notify, Policy, Record, Ret};
use super::filter::Filters;
use super::maildrop;
use super::outbound;
use super::store::{Entry, OpenError, Place, Queue};
use crate::clock::SYSTEM;
use crate::config::Config;
use crate::delivery::plan::Status;
use crate::delivery::{Local, Lookup, Message, Recipient};
use crate::relay::Relay;
use crate::smtp::address::{ForwardPath, Mailbox};
use crate::smtp::trace::{Clock, UnixTime};
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the runner is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Look in the maildrop.
    Pickup,
    /// Try every message now.
    Flush,
    /// Read the queue's directories again (after `queue hold`, `release`
    /// or `delete`).
    Rescan,
    /// Messages were queued by a session: they are in the [`Inbox`].
    Queued,
    Stop,
}

/// The ids of messages sessions have just queued, for the runner to take
/// up at once without reading the whole queue again.
#[derive(Default)]
pub struct Inbox(std::sync::Mutex<Vec<String>>);

impl Inbox {
    pub fn push(&self, id: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A relay connection with this many messages waiting for it is behind:
/// the next message goes to another.
const BEHIND: usize = 8;
/// The most messages handed to one relay connection at a time.
const FILL: usize = 64;

/// The maildrop and the queue are looked at this often without being
/// asked, in case a wake-up was missed.
const SCAN_EVERY: Duration = Duration::from_secs(60);

/// Takes the maildrop's complete drops into the queue, past `[relay]
/// milters` if there are any; the ids of those queued.
fn take_drops(queue: &Queue, live: &Live) -> Vec<String> {
    let names = match maildrop::waiting(queue) {
        Ok(n) => n,
        Err(e) => {
            log::error!("maildrop: cannot read it: {e}");
            return Vec::new();
        }
    };
    if names.is_empty() {
        return Vec::new();
    }
    let local = live().local;
    let config = local.config();
    let filters = Filters {
        milters: config.relay_milters(),
        spool_dir: &config.spool_dir,
        quarantine: config.quarantine.as_deref(),
        hostname: &config.hostname,
        max_size: config.server.max_message_size,
    };
    let filters = (!filters.milters.is_empty()).then_some(&filters);
    let mut ids = Vec::new();
    // A bounded batch at a time: the queue files of one batch are made
    // durable together.
    for batch in names.chunks(256) {
        let taken = maildrop::pick_up(
            queue,
            batch,
            &config.hostname,
            config.server.max_message_size,
            filters,
        );
        for (name, r) in taken {
            match r {
                Ok(id) => ids.push(id),
                Err(maildrop::Refused::Io(e)) => {
                    log::error!("maildrop: {name} cannot be taken now: {e}")
                }
                Err(maildrop::Refused::Bad(_)) => {}
                Err(maildrop::Refused::Later(why)) => {
                    log::warn!("maildrop: {name} waits for a later pickup: a milter said {why}")
                }
            }
        }
    }
    ids
}

/// What the runner delivers with: the mailboxes, and the relay if there
/// is one.
pub struct Services {
    pub local: Arc<Local>,
    pub relay: Option<Arc<Relay>>,
}

/// Where the runner gets the services in force (they change on reload).
pub type Live = Arc<dyn Fn() -> Services + Send + Sync>;

pub struct Runner {
    queue: Queue,
    live: Live,
    inbox: Arc<Inbox>,
    /// Where messages go to be relayed: a channel per connection, with the
    /// number of messages each has now; and the messages out there (their
    /// files are the relay threads' until they come back).
    relay: Vec<(Sender<outbound::Work>, usize)>,
    out: HashSet<String>,
    /// Messages for the relay while every connection has its fill: handed
    /// over as they free up.
    waiting: VecDeque<outbound::Job>,
    /// Messages by when they are due (seconds), and the other way round.
    due: BTreeSet<(i64, String)>,
    when: HashMap<String, i64>,
    /// Messages the relay threads give back.
    done: Receiver<outbound::Done>,
    /// How many messages are in the queue, for the server's status.
    count: Arc<std::sync::atomic::AtomicUsize>,
    /// Where pickups are asked for when `[relay] milters` run them on a
    /// thread of their own, and where that thread hands back the ids it
    /// queued (never ready until then).
    pickups: Option<Sender<()>>,
    picked: Receiver<Vec<String>>,
}

fn now() -> i64 {
    SYSTEM.now().secs
}

pub fn policy(config: &Config) -> Policy {
    let q = &config.queue;
    Policy {
        retry_first: q.retry_first.as_secs(),
        retry_max: q.retry_max.as_secs(),
        lifetime: q.max_lifetime.as_secs(),
        delay_warning: q.delay_warning.as_secs(),
    }
}

impl Runner {
    /// Starts the relay threads and looks at the queue and the maildrop,
    /// so that what waits there is scheduled; this is done before the
    /// server takes connections, which then find the file work of the
    /// start behind them.
    pub fn start(
        queue: Queue,
        live: Live,
        inbox: Arc<Inbox>,
        count: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Runner {
        // The relay's threads end when the runner's ends of their channels
        // go. They are not waited for: a crash at any point loses nothing,
        // and a stop should not wait for a hung relay.
        let (done_tx, done) = crossbeam_channel::unbounded();
        let mut runner = Runner {
            queue,
            live,
            inbox,
            relay: Vec::new(),
            out: HashSet::new(),
            waiting: VecDeque::new(),
            due: BTreeSet::new(),
            when: HashMap::new(),
            done,
            count,
            pickups: None,
            picked: crossbeam_channel::never(),
        };
        let connections = (runner.live)()
            .local
            .config()
            .relay
            .as_ref()
            .map_or(1, |r| r.connections);
        match outbound::start(&runner.queue, connections, &done_tx) {
            Ok(workers) => runner.relay = workers.into_iter().map(|w| (w, 0)).collect(),
            Err(e) => {
                log::error!("queue: cannot start the relay threads, mail for the relay waits: {e}")
            }
        }
        drop(done_tx);
        runner.forget_taken_drops();
        runner.rescan();
        runner.pick_up();
        runner.counted();
        runner
    }

    /// Publishes how many messages wait: scheduled, or out at the relay.
    fn counted(&self) {
        self.count.store(
            self.when.len() + self.out.len(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Runs until told to stop.
    pub fn run(mut self, wake: Receiver<Wake>) {
        let done = self.done.clone();
        let mut last_scan = Instant::now();
        loop {
            for id in self.inbox.take() {
                self.schedule(&id, i64::MIN);
            }
            while let Some(id) = self.next_due(now()) {
                self.attempt(&id);
                // What was asked meanwhile is done now, not dropped.
                while let Ok(w) = wake.try_recv() {
                    if !self.handle(w) {
                        return;
                    }
                }
                while let Ok(d) = done.try_recv() {
                    self.back(d);
                }
            }
            self.counted();
            let until_due = self.due.first().map_or(SCAN_EVERY, |(t, _)| {
                Duration::from_secs((t - now()).max(0) as u64)
            });
            let wait = until_due.min(SCAN_EVERY.saturating_sub(last_scan.elapsed()));
            crossbeam_channel::select! {
                recv(wake) -> w => match w {
                    Ok(w) => {
                        if !self.handle(w) {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                recv(done) -> back => {
                    if let Ok(d) = back {
                        self.back(d);
                    }
                }
                recv(self.picked) -> ids => match ids {
                    Ok(ids) => {
                        for id in ids {
                            self.schedule(&id, i64::MIN);
                        }
                    }
                    // A panic in a milter's turn: the next pickup starts
                    // the thread again, and the drop is still there.
                    Err(_) => {
                        log::error!("maildrop: the pickup thread ended");
                        self.pickups = None;
                        self.picked = crossbeam_channel::never();
                    }
                },
                default(wait) => {}
            }
            if last_scan.elapsed() >= SCAN_EVERY {
                self.pick_up();
                self.rescan();
                last_scan = Instant::now();
            }
        }
    }

    /// Does what was asked; false for a stop.
    fn handle(&mut self, w: Wake) -> bool {
        match w {
            Wake::Pickup => self.pick_up(),
            Wake::Flush => {
                for (jobs, _) in &self.relay {
                    let _ = jobs.try_send(outbound::Work::Retry);
                }
                self.pick_up();
                self.rescan();
                let ids: Vec<String> = self.when.keys().cloned().collect();
                for id in ids {
                    self.schedule(&id, i64::MIN);
                }
            }
            Wake::Rescan => self.rescan(),
            Wake::Queued => {
                for id in self.inbox.take() {
                    self.schedule(&id, i64::MIN);
                }
            }
            Wake::Stop => return false,
        }
        true
    }

    fn next_due(&mut self, now: i64) -> Option<String> {
        let (t, _) = self.due.first()?;
        if *t > now {
            return None;
        }
        let (_, id) = self.due.pop_first()?;
        self.when.remove(&id);
        Some(id)
    }

    fn schedule(&mut self, id: &str, at: i64) {
        if let Some(old) = self.when.insert(id.to_string(), at) {
            self.due.remove(&(old, id.to_string()));
        }
        self.due.insert((at, id.to_string()));
    }

    /// A drop still in the maildrop after a crash, but already queued, is
    /// removed rather than queued again.
    fn forget_taken_drops(&self) {
        let dir = self.queue.dir().join(maildrop::DIR);
        for place in [Place::Active, Place::Hold] {
            for id in self.queue.ids(place).unwrap_or_default() {
                if let Ok(Entry {
                    env:
                        Envelope {
                            drop: Some(name), ..
                        },
                    ..
                }) = self.queue.open(place, &id)
                {
                    maildrop::forget(&dir, &name);
                }
            }
        }
    }

    /// Reads `active/` again: every message there is scheduled when its
    /// records say, and nothing else is.
    fn rescan(&mut self) {
        let ids = match self.queue.ids(Place::Active) {
            Ok(ids) => ids,
            Err(e) => {
                log::error!("queue: cannot read {}: {e}", self.queue.dir().display());
                return;
            }
        };
        let local = (self.live)().local;
        let policy = policy(local.config());
        self.due.clear();
        self.when.clear();
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !self.out.contains(id))
            .collect();
        for id in ids {
            match self.queue.open(Place::Active, &id) {
                Ok(e) => {
                    let at = e.state().next_attempt(&policy).unwrap_or(i64::MIN);
                    self.schedule(&id, at);
                }
                Err(e) => self.unreadable(&id, e),
            }
        }
    }

    fn unreadable(&mut self, id: &str, e: OpenError) {
        match e {
            OpenError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            OpenError::Io(e) => {
                log::error!("{id}: cannot open its queue file: {e}");
                self.schedule(id, now() + 60);
            }
            OpenError::Bad(why) => {
                log::error!("{id}: queue file set aside in corrupt/: {why}");
                if let Err(e) = self.queue.set_aside(Place::Active, id) {
                    log::error!("{id}: cannot set it aside: {e}");
                }
            }
        }
    }

    /// Takes what is in the maildrop into the queue; each is due at once.
    /// With `[relay] milters` that is done on a thread of its own (made
    /// the first time), which hands the ids back: a milter that is slow
    /// or hangs then holds up no delivery, only the pickup.
    fn pick_up(&mut self) {
        let filtered = !(self.live)().local.config().relay_milters().is_empty();
        if filtered && self.pickups.is_none() {
            self.start_pickups();
        }
        match &self.pickups {
            // Full: a pickup is asked for already, and will see this drop.
            Some(ask) if filtered => {
                let _ = ask.try_send(());
            }
            _ => {
                for id in take_drops(&self.queue, &self.live) {
                    self.schedule(&id, i64::MIN);
                }
            }
        }
    }

    /// Starts the thread that picks up past `[relay] milters`; if it
    /// cannot start, pickups stay on this one (logged).
    fn start_pickups(&mut self) {
        let (ask, asked) = crossbeam_channel::bounded(1);
        let (taken, picked) = crossbeam_channel::unbounded();
        let (queue, live) = (self.queue.clone(), self.live.clone());
        let started = std::thread::Builder::new()
            .name("pickup".into())
            .spawn(move || {
                // Ends when the runner's end of `ask` goes.
                while asked.recv().is_ok() {
                    if taken.send(take_drops(&queue, &live)).is_err() {
                        return;
                    }
                }
            });
        match started {
            Ok(_) => {
                self.pickups = Some(ask);
                self.picked = picked;
            }
            Err(e) => log::error!("maildrop: cannot start the pickup thread, picking up here: {e}"),
        }
    }

    /// Tries the message's due recipients, records what became of them,
    /// reports failures, and schedules what is left.
    fn attempt(&mut self, id: &str) {
        let mut e = match self.queue.open(Place::Active, id) {
            Ok(e) => e,
            Err(err) => return self.unreadable(id, err),
        };
        let services = (self.live)();
        let local = &services.local;
        let config = local.config();
        let policy = policy(config);
        let now = now();
        let mut new = Vec::new();
        let (records, remote) = tries(
            &self.queue,
            local,
            services.relay.is_some(),
            &e,
            now,
            &mut new,
        );
        for id in new {
            self.schedule(&id, i64::MIN);
        }
        if let Err(err) = e.append(&records) {
            // Not recorded: the attempt counts as not made, and copies it
            // made are made again (the 250-then-crash window, widened by
            // a failing disk).
            log::error!("{id}: recording the attempt failed, retrying later: {err}");
            self.schedule(id, now + policy.retry_first as i64);
            return;
        }
        if !remote.is_empty() && self.relay.is_empty() {
            // Never so: the relay thread would not start. The message
            // waits, as after a failed attempt.
            self.schedule(id, now + policy.retry_first as i64);
            return;
        }
        if let (Some(relay), false) = (&services.relay, remote.is_empty()) {
            let job = outbound::Job {
                id: id.to_string(),
                // Messages that wait here hold no file open.
                entry: self.waiting.is_empty().then_some(e),
                remote,
                relay: relay.clone(),
                local: local.clone(),
            };
            self.out.insert(id.to_string());
            self.waiting.push_back(job);
            self.hand_over();
            return;
        }
        self.conclude(&mut e, config, &policy, now);
    }

    /// Hands the waiting messages to the relay threads: the first
    /// connection that is not behind takes the next one, so that a few
    /// messages share one connection and a backlog spreads over more;
    /// when all have their fill, the rest wait here.
    fn hand_over(&mut self) {
        while let Some(job) = self.waiting.pop_front() {
            let free = (0..self.relay.len())
                .find(|&w| self.relay[w].1 < BEHIND)
                .or_else(|| {
                    (0..self.relay.len())
                        .filter(|&w| self.relay[w].1 < FILL)
                        .min_by_key(|&w| self.relay[w].1)
                });
            let Some(w) = free else {
                self.waiting
                    .push_front(outbound::Job { entry: None, ..job });
                return;
            };
            // A thread that is behind gets the name only: the files of
            // messages in its channel are not all held open.
            let job = if self.relay[w].1 < BEHIND {
                job
            } else {
                outbound::Job { entry: None, ..job }
            };
            match self.relay[w].0.try_send(outbound::Work::Job(Box::new(job))) {
                Ok(()) => self.relay[w].1 += 1,
                Err(e) => {
                    // The thread is gone: its message waits for a retry.
                    let job = e.into_inner();
                    let outbound::Work::Job(job) = job else {
                        continue;
                    };
                    let job = *job;
                    log::error!("{}: the relay thread {w} is gone", job.id);
                    self.out.remove(&job.id);
                    self.schedule(&job.id, now() + 60);
                }
            }
        }
    }

    /// A message is back from the relay thread: its records are complete
    /// for this attempt, unless they could not be written (then it waits,
    /// as a failed attempt would).
    fn back(&mut self, done: outbound::Done) {
        let outbound::Done {
            id,
            entry,
            recorded,
            worker,
        } = done;
        let id = id.as_str();
        self.out.remove(id);
        if let Some((_, n)) = self.relay.get_mut(worker) {
            *n = n.saturating_sub(1);
        }
        self.hand_over();
        if !recorded {
            let local = (self.live)().local;
            let wait = policy(local.config()).retry_first as i64;
            self.schedule(id, now() + wait);
            return;
        }
        let mut e = match entry.map_or_else(|| self.queue.open(Place::Active, id), Ok) {
            Ok(e) => e,
            Err(err) => return self.unreadable(id, err),
        };
        let services = (self.live)();
        let config = services.local.config();
        self.conclude(&mut e, config, &policy(config), now());
    }

    /// Reports what is to be reported, then removes the message if its
    /// work is done, or schedules its next attempt.
    fn conclude(&mut self, e: &mut Entry, config: &Config, policy: &Policy, now: i64) {
        let id = e.env.id.clone();
        let id = id.as_str();
        self.report(e, config, policy, now);
        let state = e.state();
        if state.finished() {
            match self.queue.remove_done(id) {
                Ok(()) => log::info!("{id}: done, removed from the queue"),
                Err(err) => log::error!("{id}: done, but removing it failed: {err}"),
            }
        } else if let Some(at) = state.next_attempt(policy) {
            self.schedule(id, at.max(now + 1));
        } else {
            // Only reports are left, and they could not be queued.
            self.schedule(id, now + policy.retry_first as i64);
        }
    }

    /// Queues the notices that are due: one for the failures and one for
    /// the successes not yet reported, for each who hears of them, and
    /// the one delay warning; records that they are sent.
    fn report(&mut self, e: &mut Entry, config: &Config, policy: &Policy, now: i64) {
        let state = e.state();
        // (who, is it about successes, the recipients)
        let mut notices: Vec<(String, bool, Vec<dsn::Entry>)> = Vec::new();
        for &i in &state.unreported {
            let (rcpt, dest, to, entry) = match &e.records[i] {
                Record::Failed {
                    rcpt,
                    status,
                    dest,
                    notify,
                    reason,
                    ..
                } => {
                    if !e.env.recipients[*rcpt].reports_failure() {
                        log::info!(
                            "{}: <{dest}> failed; NOTIFY=NEVER, nobody is told",
                            e.env.id
                        );
                        continue;
                    }
                    let to = notify.clone().unwrap_or_else(|| e.env.sender.clone());
                    (
                        *rcpt,
                        dest,
                        to,
                        (dsn::Action::Failed, status.as_str(), reason.as_str()),
                    )
                }
                Record::Sent {
                    rcpt, dest, how, ..
                } => {
                    let action = match how {
                        Handed::Delivered => dsn::Action::Delivered,
                        _ => dsn::Action::Relayed,
                    };
                    (*rcpt, dest, e.env.sender.clone(), (action, "2.0.0", ""))
                }
                _ => continue,
            };
            let r = &e.env.recipients[rcpt];
            let success = entry.0 != dsn::Action::Failed;
            if success && to.is_empty() {
                continue;
            }
            let item = dsn::Entry {
                action: entry.0,
                recipient: dest.clone(),
                original: (r.address != *dest).then(|| r.address.clone()),
                status: entry.1.into(),
                diagnostic: entry.2.into(),
            };
            match notices
                .iter_mut()
                .find(|(w, s, _)| *w == to && *s == success)
            {
                Some((_, _, list)) => list.push(item),
                None => notices.push((to, success, vec![item])),
            }
        }
        let warn = !state.warned
            && policy.delay_warning > 0
            && now >= e.env.arrived.saturating_add(policy.delay_warning as i64)
            && !e.env.sender.is_empty();
        let late: Vec<dsn::Entry> = if warn {
            state
                .pending()
                .filter(|&n| e.env.recipients[n].reports_delay())
                .map(|n| {
                    let (status, why) = state.recipients[n]
                        .last_error
                        .clone()
                        .unwrap_or_else(|| ("4.0.0".into(), String::new()));
                    dsn::Entry {
                        action: dsn::Action::Delayed,
                        recipient: e.env.recipients[n].address.clone(),
                        original: None,
                        status,
                        diagnostic: why,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        if notices.is_empty() && late.is_empty() {
            if !state.unreported.is_empty() {
                self.record(
                    e,
                    Record::Reported {
                        at: now,
                        id: "-".into(),
                    },
                );
            }
            return;
        }
        let header = match dsn::read_header(e.body()) {
            Ok(h) => h,
            Err(err) => {
                log::error!("{}: reading its header for a notice: {err}", e.env.id);
                return;
            }
        };
        let mut ids = Vec::new();
        for (to, success, entries) in notices {
            let (to, notify) = if !to.is_empty() {
                (to, None)
            } else {
                // A notice that failed goes to postmaster once, and no
                // further: that one has NOTIFY=NEVER, so it is never
                // reported on.
                (
                    format!("postmaster@{}", config.session_settings().default_domain),
                    Some(Notify::NEVER),
                )
            };
            let kind = if success {
                dsn::Kind::Success
            } else {
                dsn::Kind::Failure
            };
            match self.notice(e, config, kind, &header, &to, notify, &entries) {
                Some(id) => ids.push(id),
                None => return,
            }
        }
        if !ids.is_empty() || !state.unreported.is_empty() {
            let id = if ids.is_empty() {
                "-".into()
            } else {
                ids.join(",")
            };
            self.record(e, Record::Reported { at: now, id });
        }
        if !late.is_empty() {
            let until = e.env.arrived.saturating_add(policy.lifetime as i64);
            let kind = dsn::Kind::Delay {
                until: UnixTime::from_secs(until),
            };
            let sender = e.env.sender.clone();
            if let Some(id) = self.notice(e, config, kind, &header, &sender, None, &late) {
                self.record(e, Record::Warned { at: now, id });
            }
        } else if warn {
            self.record(
                e,
                Record::Warned {
                    at: now,
                    id: "-".into(),
                },
            );
        }
    }

    fn record(&self, e: &mut Entry, record: Record) {
        if let Err(err) = e.append(&[record]) {
            log::error!("{}: recording its notices failed: {err}", e.env.id);
        }
    }

    /// Queues one notice and schedules it; `None` (logged) if it could
    /// not be queued.
    #[allow(clippy::too_many_arguments)]
    fn notice(
        &mut self,
        e: &Entry,
        config: &Config,
        kind: dsn::Kind,
        header: &[u8],
        to: &str,
        notify: Option<Notify>,
        entries: &[dsn::Entry],
    ) -> Option<String> {
        // RET=FULL returns the whole message with a bounce; delays and
        // successes carry the header only, as Postfix's do.
        let full = kind == dsn::Kind::Failure && e.env.ret == Some(Ret::Full);
        let whole;
        let returned = if full {
            let mut all = Vec::with_capacity(e.env.size as usize);
            if let Err(err) = std::io::Read::read_to_end(&mut e.body().reader(), &mut all) {
                log::error!("{}: reading it for a notice: {err}", e.env.id);
                return None;
            }
            whole = all;
            &whole[..]
        } else {
            header
        };
        let notice = super::Notice {
            original_id: &e.env.id,
            arrival: UnixTime::from_secs(e.env.arrived),
            envid: e.env.envid.as_deref(),
            kind,
            returned,
            full,
            to,
            notify,
            entries,
        };
        match super::queue_notice(&self.queue, config, &notice) {
            Ok(id) => {
                self.schedule(&id, i64::MIN);
                Some(id)
            }
            Err(err) => {
                log::error!("{}: queueing a notice to <{to}> failed: {err}", e.env.id);
                None
            }
        }
    }
}

/// Tries the recipients of a message that are due, delivering the local
/// ones; the records of what became of them, and the remote ones left
/// for the relay (`relay`: there is one).
/// Messages queued on the way (for members elsewhere) go into `new`.
#[allow(clippy::too_many_arguments)]
fn tries(
    queue: &Queue,
    local: &Local,
    relay: bool,
    e: &Entry,
    now: i64,
    new: &mut Vec<String>,
) -> (Vec<Record>, Vec<usize>) {
    let config = local.config();
    let state = e.state();
    let policy = policy(config);
    let mut records = Vec::new();
    let expired = now >= e.env.arrived.saturating_add(policy.lifetime as i64);
    let fail = |records: &mut Vec<Record>, n: usize, status: &str, reason: String| {
        records.push(Record::Failed {
            rcpt: n,
            at: now,
            status: status.into(),
            dest: e.env.recipients[n].address.clone(),
            notify: None,
            reason,
        });
        records.push(Record::Done { rcpt: n, at: now });
    };
    let mut here: Vec<(usize, Recipient)> = Vec::new();
    let mut remote = Vec::new();
    for n in state.pending() {
        let r = &state.recipients[n];
        let address = &e.env.recipients[n].address;
        if expired {
            let last = r.last_error.as_ref().map_or(String::new(), |(_, why)| {
                format!("; the last attempt: {why}")
            });
            fail(
                &mut records,
                n,
                "4.4.7",
                format!("delivery time expired{last}"),
            );
            continue;
        }
        let mailbox = match Mailbox::parse(address) {
            Ok(m) => m,
            Err(err) => {
                fail(&mut records, n, "5.1.3", format!("bad address: {err}"));
                continue;
            }
        };
        if !crate::delivery::is_local(config, &mailbox.domain) {
            if relay {
                remote.push(n);
                continue;
            }
            fail(
                &mut records,
                n,
                "5.7.1",
                "mail for other hosts is not relayed from here (no [relay] is configured)".into(),
            );
            continue;
        }
        match local.lookup(&ForwardPath::Mailbox(mailbox)) {
            Lookup::Local(mut found) => {
                found.dests.retain(|d| !r.settled.contains(&d.address));
                let forwards: Vec<super::envelope::Rcpt> = found
                    .forwards()
                    .map(|to| super::envelope::Rcpt {
                        notify: e.env.recipients[n].notify,
                        ..super::envelope::Rcpt::new(to)
                    })
                    .collect();
                if !forwards.is_empty() {
                    let addresses: Vec<String> =
                        forwards.iter().map(|f| f.address.clone()).collect();
                    match super::queue_message(queue, &e.env.sender, forwards, e.body(), &[]) {
                        Ok(id) => {
                            log::info!("{}: queued as {id} for members elsewhere", e.env.id);
                            new.push(id);
                            records.extend(addresses.into_iter().map(|dest| Record::Sent {
                                rcpt: n,
                                at: now,
                                dest,
                                how: Handed::Passed,
                            }));
                        }
                        Err(err) => {
                            records.push(Record::Deferred {
                                rcpt: n,
                                at: now,
                                status: "4.3.0".into(),
                                reason: format!("queueing for the relay: {err}"),
                            });
                            continue;
                        }
                    }
                    found
                        .dests
                        .retain(|d| !matches!(d.target, crate::delivery::Target::Forward(_)));
                }
                here.push((n, found));
            }
            Lookup::UnknownUser => fail(&mut records, n, "5.1.1", "no such mailbox here".into()),
            Lookup::NotLocal => fail(&mut records, n, "5.7.1", "not a local address".into()),
            Lookup::Loop(chain) => fail(&mut records, n, "5.4.6", format!("alias loop: {chain}")),
            Lookup::Remote(to) => fail(
                &mut records,
                n,
                "5.7.1",
                format!(
                    "an alias leads to <{to}>, and mail for other hosts is not relayed from here"
                ),
            ),
            Lookup::Refused(why) => fail(&mut records, n, "5.7.1", why),
            Lookup::TempFail(why) => records.push(Record::Deferred {
                rcpt: n,
                at: now,
                status: "4.3.0".into(),
                reason: why,
            }),
        }
    }
    if !here.is_empty() {
        deliver_here(local, e, &here, now, &mut records);
    }
    (records, remote)
}

/// Delivers to the local recipients `here` and records each one's copies.
fn deliver_here(
    local: &Local,
    e: &Entry,
    here: &[(usize, Recipient)],
    now: i64,
    records: &mut Vec<Record>,
) {
    let recipients: Vec<Recipient> = here.iter().map(|(_, r)| r.clone()).collect();
    let msg = Message {
        id: &e.env.id,
        reverse_path: &e.env.sender,
        recipients: &recipients,
        body: e.body(),
        received: UnixTime::from_secs(e.env.arrived),
        // What the sender asked to hear of is the runner's to report.
        dsn: crate::delivery::Dsn::default(),
    };
    let deadline = Instant::now() + local.config().timeouts.delivery;
    let a = local.attempt(&msg, deadline);
    let mut outcomes = a.failed;
    outcomes.extend(
        local
            .commit(a.held, &e.env.id, deadline)
            .into_iter()
            .filter(|o| o.status != Status::Delivered),
    );
    for (n, r) in here {
        let mine: Vec<_> = outcomes
            .iter()
            .filter(|o| o.original == r.address)
            .collect();
        for d in &r.dests {
            if !mine.iter().any(|o| o.recipient == d.address) {
                records.push(Record::Sent {
                    rcpt: *n,
                    at: now,
                    dest: d.address.clone(),
                    how: Handed::Delivered,
                });
            }
        }
        let mut deferred = None;
        for o in &mine {
            match &o.status {
                Status::Failed(err) => records.push(Record::Failed {
                    rcpt: *n,
                    at: now,
                    status: o.code.into(),
                    dest: o.recipient.clone(),
                    notify: (o.notify != e.env.sender).then(|| o.notify.clone()),
                    reason: err.reason.clone(),
                }),
                Status::Deferred(err) => deferred = Some((o.code, err.reason.clone())),
                Status::Delivered => {}
            }
        }
        records.push(match deferred {
            Some((status, reason)) => Record::Deferred {
                rcpt: *n,
                at: now,
                status: status.into(),
                reason,
            },
            None => Record::Done { rcpt: *n, at: now },
        });
    }
}
