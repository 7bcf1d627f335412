//! The acceptor thread: one `mio::Poll` over every listener, the signals
//! (SIGTERM, SIGINT, SIGHUP), a waker, and the connections of parked
//! sessions. It accepts until `WouldBlock`, hands each connection to the
//! pool without ever blocking, and answers 421 itself when the pool's
//! queue is full or the client has too many connections open. A parked
//! session goes back to the pool when its client sends more, or when its
//! command timeout runs out (to be told so); the timeouts of idle clients
//! run here, not on worker threads.

use super::{admit, Job, Parked, Shared};
use crate::config::Listener;
use crate::smtp::reply::{self, Reply};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Pending connections the kernel may hold per listener.
const BACKLOG: i32 = 1024;

/// Binds a listening socket with a large backlog; IPv6 sockets are
/// IPv6-only so that `[::]` and `0.0.0.0` can both be listed.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

pub struct Acceptor {
    poll: Poll,
    waker: Arc<Waker>,
    signals: Signals,
    listeners: Vec<(TcpListener, Listener)>,
    /// Dropped when accepting stops, which tells idle workers to finish.
    tx: Option<Sender<Job>>,
    /// Dropped when accepting stops, which starts the shutdown in `wait`.
    stopping: Option<Sender<()>>,
    shared: Arc<Shared>,
    /// Sessions the workers park.
    back: Receiver<Box<Parked>>,
    /// The parked sessions, by their token in the poll.
    parked: HashMap<usize, Box<Parked>>,
    /// When each parked session's next command is due, and its token.
    due: BTreeSet<(Instant, usize)>,
    /// Work for the pool that did not fit its channel yet, in order, with
    /// when it came: new connections, and parked sessions to go on.
    ready: VecDeque<(Job, Instant)>,
    /// The pool's end of its channel, to take back what waits there too
    /// long (see [`Acceptor::reclaim`]).
    rx: Receiver<Job>,
    /// What was sent into the channel and may still be there, oldest
    /// first: when each new connection was accepted, `None` for other
    /// work.
    sent: VecDeque<Option<Instant>>,
    /// Connections were left in the kernel's backlog: the hand-off queue
    /// was full.
    held: bool,
    /// How many wait there, for the workers to see.
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// The next token for a parked session.
    next: usize,
    reserve: Reserve,
    failures: AcceptFailures,
    /// Since when nothing has waited for a worker, while under stress.
    calm_since: Option<Instant>,
    /// Since when something has waited for a worker, without a break.
    waiting_since: Option<Instant>,
    /// When the service manager next hears from us.
    beats: Beats,
}

/// What the acceptor tells the service manager on its own: `WATCHDOG=1`
/// at half the watchdog's interval while it runs, and the status line
/// when it has changed, looked at every [`STATUS_EVERY`].
struct Beats {
    watchdog: Option<Instant>,
    status: Option<Instant>,
    said: String,
}

const STATUS_EVERY: Duration = Duration::from_secs(10);

/// After an accept failure the listeners are tried again after this
/// long at first, twice as long after each further failure, up to
/// [`ACCEPT_RETRY_MAX`].
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);
/// Accept failures are logged at most once in this long, with a count.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(60);

/// A descriptor kept open for the moment the process has no other: it is
/// closed to accept a connection that could not be accepted otherwise,
/// which is then told 421 and closed, instead of waiting in the backlog in
/// silence; then it is taken again.
struct Reserve(Option<std::fs::File>);

impl Reserve {
    fn take() -> Reserve {
        Reserve(std::fs::File::open("/dev/null").ok())
    }
}

/// What became of a client accepted with the reserve descriptor.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Told 421 and closed.
    Told,
    /// Nobody was waiting after all.
    NoneWaiting,
    /// The reserve is gone (taken by another thread meanwhile): the
    /// listeners are tried again later.
    NoReserve,
}

/// Accept failures: when the last was logged, and how many since.
struct AcceptFailures {
    logged: Option<Instant>,
    since: u64,
    /// Consecutive failed rounds, for the back-off.
    streak: u32,
}

impl AcceptFailures {
    fn note(&mut self, e: &io::Error) {
        self.since += 1;
        if self.logged.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY) {
            log::warn!(
                "accept failed: {e} ({} times since the last report); new clients are told 421 while it lasts",
                self.since
            );
            self.logged = Some(Instant::now());
            self.since = 0;
        }
    }

    /// How long to wait before the listeners are tried again.
    fn retry_in(&self) -> Duration {
        ACCEPT_RETRY
            .saturating_mul(1 << self.streak.min(8))
            .min(ACCEPT_RETRY_MAX)
    }
}

/// The server enters stress mode once work has waited for a worker this
/// long without a break, and leaves it once nothing has waited for
/// [`CALM`].
const PRESSURE_AFTER: Duration = Duration::from_secs(1);
const CALM: Duration = Duration::from_secs(5);

/// While work waits for room in the pool's channel, the poll looks again
/// this often.
const READY_RETRY: Duration = Duration::from_millis(20);
/// A new connection that gets no worker within this long is told the
/// server is too busy (421) rather than left waiting in silence.
const NEWCOMER_WAIT: Duration = Duration::from_secs(3);
/// While shutting down, how often the acceptor looks whether every
/// connection has ended.
const DRAIN_CHECK: Duration = Duration::from_millis(50);

impl Acceptor {
    pub fn new(
        mut listeners: Vec<(TcpListener, Listener)>,
        (tx, rx): (Sender<Job>, Receiver<Job>),
        stopping: Sender<()>,
        shared: Arc<Shared>,
        back: Receiver<Box<Parked>>,
    ) -> io::Result<Acceptor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        for (i, (l, _)) in listeners.iter_mut().enumerate() {
            poll.registry().register(l, Token(i), Interest::READABLE)?;
        }
        let beats = Beats {
            watchdog: shared.notify.watchdog_every().map(|_| Instant::now()),
            status: shared.notify.enabled().then(Instant::now),
            said: String::new(),
        };
        Ok(Acceptor {
            next: listeners.len(),
            poll,
            waker,
            signals,
            listeners,
            tx: Some(tx),
            stopping: Some(stopping),
            shared,
            back,
            parked: HashMap::new(),
            due: BTreeSet::new(),
            ready: VecDeque::new(),
            reserve: Reserve::take(),
            calm_since: None,
            waiting_since: None,
            beats,
            failures: AcceptFailures {
                logged: None,
                since: 0,
                streak: 0,
            },
            rx,
            sent: VecDeque::new(),
            held: false,
            pending: Arc::default(),
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// How much work waits for room in the pool's channel.
    pub fn pending(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.pending.clone()
    }

    /// Accepts until a stop is asked for, then closes the listeners and
    /// the channel (which tells the workers to finish) and keeps watching
    /// the signals, so that a second SIGTERM or SIGINT can hurry the
    /// shutdown, until the server is finished.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        // After an accept error (out of file descriptors, say) pending
        // connections raise no new event, so poll again soon and retry.
        let mut retry = false;
        loop {
            let timeout = self.timeout(retry);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("poll failed: {e}");
                    self.shared.shutdown.store(true, Ordering::SeqCst);
                    return;
                }
            }
            let mut ready: Vec<usize> = Vec::new();
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.signals(),
                    WAKER => {}
                    Token(i) if i < self.listeners.len() => ready.push(i),
                    Token(i) => self.unpark(i, false),
                }
            }
            self.take_parked();
            self.expire();
            self.beat();
            if self.shared.finished.load(Ordering::SeqCst) {
                return;
            }
            if self.shared.shutdown.load(Ordering::SeqCst) {
                if self.tx.is_some() && self.stopping.is_some() {
                    self.stop_accepting();
                }
                self.drain();
                self.dispatch_ready();
                continue;
            }
            self.dispatch_ready();
            if retry {
                ready = (0..self.listeners.len()).collect();
            }
            retry = false;
            if std::mem::take(&mut self.held) {
                ready = (0..self.listeners.len()).collect();
            }
            for i in ready {
                retry |= !self.accept_all(i);
            }
            self.watch_pressure();
            if retry {
                self.failures.streak = self.failures.streak.saturating_add(1);
            } else {
                self.failures.streak = 0;
            }
            self.dispatch_ready();
        }
    }

    /// How long the poll may wait: until the next parked session's
    /// command is due, and not long when there is something to retry.
    fn timeout(&self, retry: bool) -> Option<Duration> {
        let now = Instant::now();
        let mut t = self
            .due
            .first()
            .map(|(at, _)| at.saturating_duration_since(now));
        let mut soon = |d: Duration| t = Some(t.map_or(d, |t| t.min(d)));
        if retry {
            soon(self.failures.retry_in());
        }
        if !self.ready.is_empty() {
            soon(READY_RETRY);
        }
        if let Some(at) = self.sent.iter().flatten().next() {
            soon(NEWCOMER_WAIT.saturating_sub(at.elapsed()));
        }
        if self.shared.shutdown.load(Ordering::SeqCst) {
            soon(DRAIN_CHECK);
        }
        for at in [self.beats.watchdog, self.beats.status]
            .into_iter()
            .flatten()
        {
            soon(at.saturating_duration_since(now));
        }
        if self.shared.stressed.load(Ordering::Relaxed) {
            soon(Duration::from_secs(1));
        } else if let Some(at) = self.waiting_since {
            soon(PRESSURE_AFTER.saturating_sub(at.elapsed()));
        }
        t
    }

    /// Takes the sessions the workers parked and watches their sockets.
    /// While shutting down nothing stays parked: the session learns of
    /// the shutdown from its worker.
    fn take_parked(&mut self) {
        while let Ok(p) = self.back.try_recv() {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                self.ready.push_back((Job::Resume(p), Instant::now()));
                continue;
            }
            let token = self.next;
            self.next = self.next.wrapping_add(1).max(self.listeners.len());
            if let Some(at) = p.session.wake_at() {
                // Held back: it goes on at its time, not when its client
                // sends more.
                self.due.insert((at, token));
                self.parked.insert(token, p);
                continue;
            }
            let fd = p.session.fd();
            match self.poll.registry().register(
                &mut SourceFd(&fd),
                Token(token),
                Interest::READABLE,
            ) {
                Ok(()) => {
                    let mut at = p.session.deadline().unwrap_or_else(Instant::now);
                    if self.shared.stressed.load(Ordering::Relaxed) {
                        at = at.min(Instant::now() + self.stress_timeout());
                    }
                    // (A session comes here with a deadline: it was
                    // waiting for a command.)
                    self.due.insert((at, token));
                    self.parked.insert(token, p);
                }
                Err(e) => {
                    // A worker waits on it, as before parking existed.
                    log::warn!("[{}]: cannot watch the connection: {e}", p.peer);
                    let mut p = p;
                    p.watchable = false;
                    self.ready.push_back((Job::Resume(p), Instant::now()));
                }
            }
        }
    }

    /// A parked session goes back to the pool: its client sent more (or
    /// closed), or its time ran out (`expired`).
    fn unpark(&mut self, token: usize, expired: bool) {
        let Some(p) = self.parked.remove(&token) else {
            return;
        };
        let held = p.session.wake_at();
        if held.is_none() {
            let fd = p.session.fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        if let Some(at) = held.or(p.session.deadline()) {
            self.due.remove(&(at, token));
        }
        // A session held back goes on at its time; others whose time is up
        // have waited too long for their client.
        let expired = expired && held.is_none();
        let job = if expired {
            Job::Expire(p)
        } else {
            Job::Resume(p)
        };
        self.ready.push_back((job, Instant::now()));
    }

    /// Parked sessions whose command is overdue are ended.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(at, token)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            self.unpark(token, true);
        }
    }

    /// Out of descriptors: gives up the reserve one to accept a connection
    /// and tell it 421, then takes the reserve again.
    fn refuse_one(&mut self, i: usize) -> Refusal {
        if self.reserve.0.take().is_none() {
            self.reserve = Reserve::take();
            return Refusal::NoReserve;
        }
        let listener = self.listeners[i].1;
        let accepted = self.listeners[i].0.accept();
        let told = match accepted {
            Ok((stream, _)) => {
                let host = self.shared.runtime().config.hostname.clone();
                refuse(TcpStream::from(stream), &listener, &reply::too_busy(&host));
                Refusal::Told
            }
            // Linux looks for a free descriptor before it looks at the
            // backlog: EMFILE comes even when nobody waits.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Refusal::NoneWaiting,
            Err(_) => Refusal::NoReserve,
        };
        self.reserve = Reserve::take();
        match told {
            Refusal::Told | Refusal::NoneWaiting if self.reserve.0.is_none() => Refusal::NoReserve,
            told => told,
        }
    }

    /// Stress mode, as Postfix has it: while every worker is busy and
    /// connections wait, the waits for clients are shorter (the parked
    /// sessions' too), until nothing has waited for [`CALM`]. Logged once
    /// on the way in and once on the way out.
    fn watch_pressure(&mut self) {
        let waiting = !self.ready.is_empty() || !self.rx.is_empty();
        if !waiting {
            self.waiting_since = None;
        }
        let waited = waiting
            && self
                .waiting_since
                .get_or_insert_with(Instant::now)
                .elapsed()
                >= PRESSURE_AFTER;
        let stressed = &self.shared.stressed;
        if waiting {
            self.calm_since = None;
        }
        if waited {
            if !stressed.swap(true, Ordering::Relaxed) {
                let t = self.stress_timeout();
                log::warn!(
                    "under pressure: every worker is busy and connections wait; \
                     clients get {} s to send a command until it passes",
                    t.as_secs()
                );
                let short = Instant::now() + t;
                for (&token, p) in &self.parked {
                    if let (None, Some(at)) = (p.session.wake_at(), p.session.deadline()) {
                        if at > short && self.due.remove(&(at, token)) {
                            self.due.insert((short, token));
                        }
                    }
                }
            }
        } else if !waiting && stressed.load(Ordering::Relaxed) {
            let calm = *self.calm_since.get_or_insert_with(Instant::now);
            if calm.elapsed() >= CALM {
                stressed.store(false, Ordering::Relaxed);
                self.calm_since = None;
                log::info!("pressure gone: timeouts are back to normal");
            }
        }
    }

    fn stress_timeout(&self) -> Duration {
        self.shared.runtime().config.timeouts.stress_command
    }

    /// How many of the jobs waiting here are new connections.
    fn newcomers(&self) -> usize {
        self.ready
            .iter()
            .filter(|(job, _)| matches!(job, Job::New { .. }))
            .count()
    }

    /// Whether the oldest new connection has waited for a worker too long.
    fn stuck(&self) -> bool {
        let waited = |at: &Instant| at.elapsed() >= NEWCOMER_WAIT;
        self.sent.iter().flatten().next().is_some_and(waited)
            || self
                .ready
                .iter()
                .find(|(job, _)| matches!(job, Job::New { .. }))
                .is_some_and(|(_, at)| waited(at))
    }

    /// Takes back what waits in the pool's channel when a new connection
    /// there has waited too long for a worker: every worker is busy, and
    /// it is to be told so (by [`Acceptor::dispatch_ready`]).
    fn reclaim(&mut self) {
        let in_channel = self.rx.len();
        while self.sent.len() > in_channel {
            self.sent.pop_front();
        }
        let stale = |at: &Instant| at.elapsed() >= NEWCOMER_WAIT;
        if !self.sent.iter().flatten().any(stale) {
            return;
        }
        self.sent.clear();
        let taken: Vec<Job> = self.rx.try_iter().collect();
        for job in taken.into_iter().rev() {
            let at = match &job {
                Job::New { since, .. } => *since,
                _ => Instant::now(),
            };
            self.ready.push_front((job, at));
        }
    }

    /// Hands the pool what waits for it, as far as its channel has room;
    /// a new connection that waited too long is told the server is busy.
    fn dispatch_ready(&mut self) {
        if self.tx.is_none() {
            // No worker is left: the connections just close.
            self.ready.clear();
            self.sent.clear();
            self.pending.store(0, Ordering::Relaxed);
            return;
        }
        self.reclaim();
        self.refuse_stale();
        let Some(tx) = &self.tx else {
            return;
        };
        while let Some((job, at)) = self.ready.pop_front() {
            let since = match &job {
                Job::New { since, .. } => Some(*since),
                _ => None,
            };
            match tx.try_send(job) {
                Ok(()) => self.sent.push_back(since),
                Err(TrySendError::Full(job)) => {
                    self.ready.push_front((job, at));
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.ready.clear();
                    break;
                }
            }
        }
        self.pending.store(self.ready.len(), Ordering::Relaxed);
    }

    /// New connections that waited too long for a worker are told 421.
    fn refuse_stale(&mut self) {
        if self.newcomers() == 0 {
            return;
        }
        let host = self.shared.runtime().config.hostname.clone();
        let waiting = std::mem::take(&mut self.ready);
        for (job, at) in waiting {
            match job {
                Job::New {
                    stream,
                    peer,
                    listener,
                    ..
                } if at.elapsed() >= NEWCOMER_WAIT => {
                    log::warn!("refused {peer}: no worker free within {NEWCOMER_WAIT:?}");
                    refuse(stream, &listener, &reply::too_busy(&host));
                }
                job => self.ready.push_back((job, at)),
            }
        }
    }

    /// While shutting down: every parked session goes to a worker, which
    /// tells its client; once no connection is left, the channel closes
    /// and the workers finish.
    fn drain(&mut self) {
        let tokens: Vec<usize> = self.parked.keys().copied().collect();
        for t in tokens {
            self.unpark(t, false);
        }
        if self.ready.is_empty() && self.shared.registry.open_count() == 0 {
            self.tx = None;
        }
    }

    /// The watchdog's ping, and the status when it changed.
    fn beat(&mut self) {
        let now = Instant::now();
        let notify = &self.shared.notify;
        if let (Some(at), Some(every)) = (self.beats.watchdog, notify.watchdog_every()) {
            if now >= at {
                notify.send("WATCHDOG=1");
                self.beats.watchdog = Some(now + every);
            }
        }
        if self.beats.status.is_some_and(|at| now >= at) {
            let status = self.shared.status();
            if status != self.beats.said {
                notify.send(&format!("STATUS={status}"));
                self.beats.said = status;
            }
            self.beats.status = Some(now + STATUS_EVERY);
        }
    }

    fn stop_accepting(&mut self) {
        for (l, _) in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        self.stopping = None;
        log::info!("no longer accepting connections");
        self.shared.notify.send(&format!(
            "STOPPING=1\nSTATUS=stopping: {}",
            self.shared.status()
        ));
    }

    fn signals(&mut self) {
        for sig in self.signals.pending() {
            match sig {
                // The new configuration is swapped in only at the end of a
                // reload, so a panic part-way keeps the old one; caught
                // here, it cannot stop the accepting either.
                SIGHUP => {
                    let shared = &self.shared;
                    shared.notify.reloading();
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.reload()))
                        .is_err()
                    {
                        log::error!("reload failed (a bug), keeping the old configuration");
                    }
                    // Ready again, with the new configuration or the old.
                    shared
                        .notify
                        .send(&format!("READY=1\nSTATUS={}", shared.status()));
                }
                _ if self.shared.shutdown.load(Ordering::SeqCst) => {
                    log::warn!("signal {sig} again: closing every connection now");
                    self.shared.force.store(true, Ordering::SeqCst);
                }
                _ => {
                    log::info!("signal {sig}: stopping");
                    self.shared.shutdown.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// Accepts until the listener has nothing more; false after an error.
    ///
    /// While the connections waiting for a worker fill the hand-off queue,
    /// the rest stay in the kernel's backlog (`held`), to be taken as soon
    /// as workers make room; only when the oldest has waited
    /// [`NEWCOMER_WAIT`] in vain are new ones taken and told 421 at once.
    fn accept_all(&mut self, i: usize) -> bool {
        let listener = self.listeners[i].1;
        loop {
            if self.newcomers() >= self.shared.runtime().config.server.handoff_queue
                && !self.stuck()
            {
                self.held = true;
                return true;
            }
            match self.listeners[i].0.accept() {
                Ok((stream, peer)) => self.dispatch(TcpStream::from(stream), peer, listener),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    let out_of_files = matches!(
                        e.raw_os_error(),
                        Some(nix::libc::EMFILE | nix::libc::ENFILE)
                    );
                    let refusal = if out_of_files {
                        self.refuse_one(i)
                    } else {
                        Refusal::NoReserve
                    };
                    if refusal == Refusal::NoneWaiting {
                        return true;
                    }
                    self.failures.note(&e);
                    if refusal == Refusal::NoReserve {
                        return false;
                    }
                }
            }
        }
    }

    fn dispatch(&mut self, stream: TcpStream, peer: SocketAddr, listener: Listener) {
        let rt = self.shared.runtime();
        let host = &rt.config.hostname;
        let ip = peer.ip().to_canonical();
        let refuse = |stream, r: &Reply| refuse(stream, &listener, r);
        if self.tx.is_none() {
            refuse(stream, &reply::shutting_down(host));
            return;
        }
        if let Some(a) = &rt.config.auth {
            let verdict =
                self.shared
                    .logins
                    .verdict(ip, Instant::now(), a.max_failures, a.failure_window);
            if let super::logins::Verdict::Refused { first } = verdict {
                if first {
                    log::warn!(
                        "refusing {ip} for a while: {} failed AUTH attempts within {} s",
                        a.max_failures,
                        a.failure_window.as_secs()
                    );
                }
                refuse(stream, &reply::too_many_auth_failures_from(host));
                return;
            }
        }
        let most = self.shared.max_connections(&rt.config);
        if self.shared.registry.open_count() >= most {
            log::warn!("refused {peer}: {most} connections open, the most allowed");
            refuse(stream, &reply::too_busy(host));
            return;
        }
        let clone = match stream.try_clone() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("refused {peer}: {e}");
                refuse(stream, &reply::too_busy(host));
                return;
            }
        };
        let Some(ticket) = admit(
            &self.shared,
            clone,
            ip,
            rt.config.server.max_connections_per_ip,
        ) else {
            log::warn!("refused {peer}: too many connections from {ip}");
            refuse(stream, &reply::too_many_connections(host));
            return;
        };
        if let Err(e) = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_nodelay(true))
        {
            log::warn!("dropping {peer}: {e}");
            return;
        }
        if self.newcomers() >= rt.config.server.handoff_queue {
            log::warn!("refused {peer}: all workers busy and the queue is full");
            refuse(stream, &reply::too_busy(host));
            return;
        }
        let since = Instant::now();
        let job = Job::New {
            stream,
            peer,
            listener,
            ticket,
            since,
        };
        self.ready.push_back((job, since));
    }
}

/// Best-effort 421 on a fresh socket, never blocking for long. On an
/// implicit TLS port the connection is just closed: a TLS client cannot
/// read a plain reply, and nothing may wait for a handshake to send one.
pub(super) fn refuse(mut stream: TcpStream, listener: &Listener, r: &Reply) {
    if listener.implicit_tls() {
        return;
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let mut out = Vec::new();
    r.write_to(&mut out, true);
    let _ = stream.write_all(&out);
}
