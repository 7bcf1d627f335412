//! The server around the sessions: listeners, the acceptor thread, the
//! worker pool, the live configuration (swapped on reload), and shutdown.
//!
//! One acceptor thread polls the listeners, the signals, a waker and the
//! sockets of parked sessions; it hands each accepted connection over a
//! bounded channel to a fixed pool of workers, each running one
//! synchronous session at a time until the session ends or waits for its
//! client's next command. Such a session is parked: it goes back to the
//! acceptor, whose poll watches its socket and its command timeout, and to
//! a worker again when its client sends more. Idle clients thus cost a
//! socket, not a thread. Work that finds no room in the channel waits in
//! the acceptor; a new connection that waits too long is answered 421
//! there. The acceptor never blocks and nothing grows without bound.

mod acceptor;
mod activation;
mod body;
mod cert;
pub mod conn;
mod control;
mod driver;
pub mod journal;
mod logins;
mod notify;
mod pool;
pub mod stdio;
mod tls;

use crate::config::Config;
use crate::delivery::{self, Delivery, Local};
use crate::notices::Immediate;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The configuration in force and the delivery built from it. Sessions
/// take a snapshot when they start and keep it to their end.
pub struct Runtime {
    pub config: Arc<Config>,
    /// What sessions read of the configuration.
    pub settings: Arc<crate::smtp::session::Settings>,
    /// The mailboxes of this box.
    pub local: Arc<Local>,
    /// Where sessions deliver: the mailboxes, with notices for failures.
    pub delivery: Arc<dyn Delivery>,
    /// Loaded from `[tls]`: read again on each reload, so a renewed
    /// certificate reaches new sessions.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The smarthost of `[relay]`, with its password and roots loaded.
    pub relay: Option<Arc<crate::relay::Relay>>,
    /// The queue, for what sessions cannot finish while their client
    /// waits; fixed at start.
    pub outbox: Option<crate::queue::Outbox>,
    /// The users file of `[auth]`, read again on each reload.
    pub users: Option<Arc<crate::auth::Users>>,
}

impl Runtime {
    /// Builds the delivery for a configuration: this reads the aliases
    /// file, whose errors (with file and line) are configuration errors,
    /// checks that postmaster reaches a mailbox (RFC 5321 4.5.1), and
    /// loads the TLS certificate and key. A runtime that replaces an
    /// older one (on reload) takes over the interrupted mbox appends that
    /// are still to be undone.
    pub fn new(
        config: Config,
        old: Option<&Runtime>,
        outbox: Option<crate::queue::Outbox>,
    ) -> Result<Runtime, String> {
        let tls = config.tls.as_ref().map(tls::load).transpose()?;
        let relay = crate::relay::Relay::new(&config)?.map(Arc::new);
        let users = config
            .auth
            .as_ref()
            .map(|a| crate::auth::Users::load(&a.users).map(Arc::new))
            .transpose()?;
        let config = Arc::new(config);
        let mut local = Local::new(config.clone())?;
        if let Some(old) = old {
            local.inherit(&old.local);
        }
        match local.lookup(&crate::smtp::address::ForwardPath::Postmaster) {
            delivery::Lookup::Local(_) => {}
            // An include file that cannot be read now may be readable later.
            delivery::Lookup::TempFail(why) => {
                log::warn!("postmaster cannot be resolved now: {why}")
            }
            other => {
                return Err(format!(
                    "postmaster must reach a mailbox (RFC 5321 4.5.1), but resolves to {}; \
                     declare [mailbox.postmaster] or an alias \"postmaster: someone\"",
                    describe_lookup(&other)
                ))
            }
        }
        let local = Arc::new(local);
        Ok(Runtime {
            delivery: Arc::new(Immediate::new(local.clone(), outbox.clone())),
            outbox,
            local,
            settings: Arc::new(config.session_settings()),
            config,
            tls,
            relay,
            users,
        })
    }
}

fn describe_lookup(l: &delivery::Lookup) -> String {
    match l {
        delivery::Lookup::Loop(chain) => format!("an alias loop ({chain})"),
        delivery::Lookup::Remote(to) => format!("the remote address <{to}>"),
        _ => "no mailbox".into(),
    }
}

/// State shared by the acceptor, the workers and the controlling thread.
pub struct Shared {
    runtime: RwLock<Arc<Runtime>>,
    /// Where the configuration came from; `None` for the embedded one.
    config_path: Option<PathBuf>,
    /// The listeners in use (bound at start, or passed by the service
    /// manager), which a reload cannot change.
    bound: Vec<crate::config::Listener>,
    shutdown: Arc<AtomicBool>,
    /// The server is under pressure: every worker busy, connections
    /// waiting (the acceptor sets it); timeouts are shorter meanwhile.
    stressed: Arc<AtomicBool>,
    /// A second stop signal: end every connection now.
    force: AtomicBool,
    /// The shutdown is complete; the acceptor may end.
    finished: AtomicBool,
    registry: Registry,
    /// Connections the descriptor limit leaves room for, worked out at
    /// start: the limit on open connections unless one is configured.
    room: usize,
    /// The service manager's notifications.
    notify: notify::Notify,
    /// Messages in the queue, as the runner last counted them.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Failed AUTH attempts by client address.
    logins: Arc<logins::FailedLogins>,
}

impl Shared {
    /// One line on how the server is doing, for the service manager.
    fn status(&self) -> String {
        notify::status(
            self.registry.open_count(),
            self.queued.load(Ordering::Relaxed),
        )
    }

    /// Connections that may be open at once.
    pub fn max_connections(&self, config: &Config) -> usize {
        config.server.max_connections.unwrap_or(self.room)
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the configuration; a bad one is logged and the old kept.
    /// Listeners, the number of workers and the queue are fixed at start.
    fn reload(&self) {
        let Some(path) = &self.config_path else {
            log::info!("reload: running on the embedded configuration, nothing to reload");
            return;
        };
        let new = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload failed, keeping the old configuration: {e}");
                return;
            }
        };
        let old = self.runtime();
        if new.tls.is_none() {
            if let Some(l) = self.bound.iter().find(|l| l.needs_certificate()) {
                log::error!(
                    "reload failed, keeping the old configuration: {} has no [tls], but the listener on {} needs it until a restart",
                    path.display(),
                    l.addr
                );
                return;
            }
        }
        if new.server.listen != old.config.server.listen
            || new.server.workers != old.config.server.workers
            || new.server.handoff_queue != old.config.server.handoff_queue
            || new.server.worker_stack != old.config.server.worker_stack
            || new.queue.dir != old.config.queue.dir
            || new.log_format != old.config.log_format
        {
            log::warn!("reload: changes to server.listen, server.smtps, server.workers, server.handoff_queue, server.worker_stack, queue_dir and log_format take effect only after a restart");
        }
        let runtime = match Runtime::new(new, Some(&old), old.outbox.clone()) {
            Ok(r) => r,
            Err(e) => {
                log::error!("reload failed, keeping the old configuration: {e}");
                return;
            }
        };
        for w in runtime.config.server.warnings() {
            log::warn!("{w}");
        }
        if let Some(w) = room_warning(&runtime.config, self.room) {
            log::warn!("{w}");
        }
        *self.runtime.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(runtime);
        log::info!("configuration reloaded from {}", path.display());
    }
}

/// Open connections: counts per client address, and a handle on each
/// socket so that a shutdown can wake the sessions blocked on reading.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    per_ip: HashMap<IpAddr, usize>,
    open: HashMap<u64, (TcpStream, Arc<AtomicBool>)>,
    next: u64,
}

/// A connection's place in the registry, given back when it drops.
pub struct Ticket {
    registry: Arc<Shared>,
    id: u64,
    ip: IpAddr,
    pub busy: Arc<AtomicBool>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut r = self.registry.registry.lock();
        if let Some(n) = r.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                r.per_ip.remove(&self.ip);
            }
        }
        // Our duplicate of the socket is the last handle on it: closing it
        // is what the client sees as the end, so the slot is free by then.
        let stream = r.open.remove(&self.id);
        drop(r);
        drop(stream);
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shuts the reading side of open connections (only idle ones unless
    /// `all`): a session blocked on reading wakes up, sees the shutdown and
    /// says 421.
    fn wake(&self, all: bool) {
        for (stream, busy) in self.lock().open.values() {
            if all || !busy.load(Ordering::SeqCst) {
                let _ = stream.shutdown(Shutdown::Read);
            }
        }
    }

    /// Shuts every open connection both ways: a session blocked writing to
    /// a client that does not read fails at once.
    fn cut(&self) {
        for (stream, _) in self.lock().open.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Waits until no connection is open, or `until`, or `force`; true if
    /// none is open.
    fn drained(&self, until: Instant, force: &AtomicBool) -> bool {
        while self.open_count() > 0 {
            if Instant::now() >= until || force.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    fn open_count(&self) -> usize {
        self.lock().open.len()
    }
}

/// Descriptors kept for what is not a connection: the acceptor's poll,
/// waker and reserve, the control socket's clients, the queue runner's
/// scans and deliveries; and for each worker, the files and pipes of a
/// delivery; for each relay connection, its socket and queue files.
const DESCRIPTORS_SPARE: u64 = 16;
const DESCRIPTORS_PER_WORKER: u64 = 8;
const DESCRIPTORS_PER_RELAY: u64 = 4;

/// How many connections the descriptor limit (`RLIMIT_NOFILE`) leaves
/// room for, each costing two (its socket, and the registry's handle on
/// it), after those open now and those the rest of the server needs;
/// and the limit itself. Past it new clients are told 421 while
/// descriptors remain to tell them, and the server's own files never run
/// short because of connections.
fn descriptor_room(config: &Config) -> (usize, u64) {
    use nix::sys::resource::{getrlimit, Resource};
    // rlim_t is 32 bits on some 32-bit targets (armv7 with glibc).
    #[allow(clippy::useless_conversion)]
    let files = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| u64::from(soft));
    // The directory's own descriptor is among those it lists.
    let open = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count().saturating_sub(1));
    let relays = config.relay.as_ref().map_or(0, |r| r.connections);
    let need = open as u64
        + DESCRIPTORS_SPARE
        + DESCRIPTORS_PER_WORKER * config.server.workers as u64
        + DESCRIPTORS_PER_RELAY * relays as u64;
    let room = usize::try_from(files.saturating_sub(need) / 2).unwrap_or(usize::MAX);
    (room.max(1), files)
}

/// A configured `max_connections` the descriptors cannot serve, or a
/// room too small for the workers to be used.
fn room_warning(config: &Config, room: usize) -> Option<String> {
    match config.server.max_connections {
        Some(n) if n > room => Some(format!(
            "server.max_connections = {n} is more than the descriptor limit leaves room for ({room}); \
             past that, new clients are told 421 only while a descriptor is left to tell them \
             (raise it with ulimit -n or LimitNOFILE=)"
        )),
        None if room < config.server.workers => Some(format!(
            "the descriptor limit leaves room for only {room} connections, fewer than the {} workers \
             (raise it with ulimit -n or LimitNOFILE=)",
            config.server.workers
        )),
        _ => None,
    }
}

/// Admits a connection unless its address already has `max` open.
/// `clone` is the registry's own handle on the connection's socket.
fn admit(shared: &Arc<Shared>, clone: TcpStream, ip: IpAddr, max: usize) -> Option<Ticket> {
    let mut r = shared.registry.lock();
    let n = r.per_ip.entry(ip).or_insert(0);
    if *n >= max {
        return None;
    }
    *n += 1;
    r.next += 1;
    let id = r.next;
    let busy = Arc::new(AtomicBool::new(false));
    r.open.insert(id, (clone, busy.clone()));
    Some(Ticket {
        registry: shared.clone(),
        id,
        ip,
        busy,
    })
}

/// An accepted connection on its way to a worker.
/// Work for the pool.
pub enum Job {
    /// A connection just accepted.
    New {
        stream: TcpStream,
        peer: SocketAddr,
        listener: crate::config::Listener,
        ticket: Ticket,
        /// When it was accepted.
        since: Instant,
    },
    /// A parked session whose client sent more.
    Resume(Box<Parked>),
    /// A parked session whose client did not send its command in time.
    Expire(Box<Parked>),
}

/// A session between commands, watched by the acceptor's poll: the
/// session, and what the server keeps of its connection.
pub struct Parked {
    pub session: Box<driver::Parked<conn::Socket>>,
    pub peer: SocketAddr,
    pub ticket: Ticket,
    /// False when the poll could not watch its socket: a worker serves it
    /// to its end without parking it again.
    pub watchable: bool,
}

/// Why the server could not start: its configuration (including the
/// files it names), or the system.
#[derive(Debug)]
pub enum StartError {
    Config(String),
    System(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(s) | StartError::System(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for StartError {}

/// Loads the configuration (`None`: the embedded one), starts the server
/// and runs it until it is told to stop.
/// Becomes `name` (its uid and primary group, no supplementary groups)
/// when running as root, after giving it the queue, the spool and the
/// control socket; as anyone else, stays who it is.
fn drop_privileges(name: &str, config: &Config) -> Result<(), StartError> {
    if !nix::unistd::geteuid().is_root() {
        log::info!("user = \"{name}\": not started as root, so running as who it is");
        return Ok(());
    }
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| StartError::System(format!("user {name}: {e}")))?
        .ok_or_else(|| StartError::Config(format!("user: no account named {name}")))?;
    let (uid, gid) = (user.uid, user.gid);
    for dir in [&config.queue.dir, &config.spool_dir] {
        chown_tree(dir, uid.as_raw(), gid.as_raw())
            .map_err(|e| StartError::System(format!("giving {} to {name}: {e}", dir.display())))?;
    }
    crate::delivery::helper::become_user(uid.as_raw(), gid.as_raw(), None)
        .map_err(|e| StartError::System(format!("cannot become {name}: {e}")))?;
    log::info!("running as {name} (uid {uid}, gid {gid})");
    Ok(())
}

/// What a root server delivering as each system user needs, and all it
/// keeps: to become a user in a helper or a pipe's process
/// (`CAP_SETUID`, `CAP_SETGID`: the helper starts with these too, and
/// loses them with root), to read a `~/.forward` in a home only its user
/// may enter (`CAP_DAC_READ_SEARCH`), and to stop a helper or a pipe
/// that ran past its time (`CAP_KILL`). Everything else, binding ports
/// and overriding permissions to write included, goes.
pub const DELIVERY_CAPABILITIES: &[caps::Capability] = &[
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_DAC_READ_SEARCH,
    caps::Capability::CAP_KILL,
];

/// Keeps only `keep` of root's capabilities: in the bounding set too, so
/// that no program started later (the delivery helper, as root, before
/// it becomes a user) gets any other back.
fn keep_only(keep: &[caps::Capability]) -> Result<(), StartError> {
    use caps::{CapSet, CapsHashSet};
    let fail = |e: caps::errors::CapsError| {
        StartError::System(format!("cannot give up capabilities: {e}"))
    };
    // Only what it has: a unit's CapabilityBoundingSet= may have taken
    // some already.
    let had = caps::read(None, CapSet::Permitted).map_err(fail)?;
    let kept: CapsHashSet = keep.iter().copied().filter(|c| had.contains(c)).collect();
    // The bounding set first, while CAP_SETPCAP is still there.
    for cap in caps::all() {
        if !kept.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).map_err(fail)? {
            caps::drop(None, CapSet::Bounding, cap).map_err(fail)?;
        }
    }
    caps::clear(None, CapSet::Inheritable).map_err(fail)?;
    caps::set(None, CapSet::Effective, &kept).map_err(fail)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(fail)?;
    let mut names: Vec<String> = kept.iter().map(ToString::to_string).collect();
    names.sort();
    log::info!("running as root with only {}", names.join(", "));
    Ok(())
}

/// `chown -R`, without following symbolic links; bounded by what the
/// server itself keeps there.
fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// The configuration the server runs on: the file, or the embedded one.
pub fn load(path: Option<&std::path::Path>) -> Result<Config, crate::config::ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::embedded()),
    }
}

/// Runs the server on `config` (loaded from `path`, which a reload reads
/// again) until it is stopped.
pub fn serve(config: Config, path: Option<PathBuf>) -> Result<(), StartError> {
    log::info!(
        "mailroom {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        path.as_ref()
            .map_or(crate::config::EMBEDDED_NAME.to_string(), |p| p
                .display()
                .to_string())
    );
    let server = Server::start(config, path)?;
    log::info!(
        "ready: {} workers on {} listeners",
        server.workers(),
        server.local_addrs().len()
    );
    server.notify_ready();
    server.wait();
    Ok(())
}

/// Checks a configuration file as a start would, including the files it
/// names (aliases, certificate and key), without starting anything.
pub fn check(path: &std::path::Path) -> Result<Vec<String>, crate::config::ConfigError> {
    let config = Config::load(path)?;
    let runtime =
        Runtime::new(config, None, None).map_err(|message| crate::config::ConfigError {
            file: path.display().to_string(),
            key: None,
            message,
        })?;
    let config = &runtime.config;
    let mut findings = config.server.warnings();
    findings.extend(below_the_rfc(config));
    findings.extend(runtime.local.findings());
    if let (Some(a), Some(users)) = (&config.auth, &runtime.users) {
        if users.is_empty() {
            findings.push(format!(
                "auth.users: {} has no logins, so nobody can use AUTH (mailroom passwd LOGIN adds one)",
                a.users.display()
            ));
        }
        for login in a.senders.keys().filter(|l| !users.contains(l)) {
            findings.push(format!(
                "auth.senders.{login}: {} has no such login",
                a.users.display()
            ));
        }
    }
    Ok(findings)
}

/// Timeouts shorter than RFC 5321 4.5.3.2 asks: 5 minutes for the
/// server's wait for a command; for the relay client, 5 minutes for a
/// reply to a command, 3 for each block of data, 10 for the final dot.
fn below_the_rfc(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut at_least = |key: &str, got: Duration, secs: u64, what: &str| {
        if got < Duration::from_secs(secs) {
            out.push(format!(
                "{key} = {} is below the {} minutes RFC 5321 4.5.3.2 asks for {what}",
                got.as_secs(),
                secs / 60
            ));
        }
    };
    at_least(
        "timeouts.command",
        config.timeouts.command,
        300,
        "a server awaiting the next command",
    );
    if let Some(r) = &config.relay {
        at_least(
            "relay.command_timeout",
            r.command_timeout,
            300,
            "a reply to MAIL or RCPT",
        );
        at_least(
            "relay.data_timeout",
            r.data_timeout,
            180,
            "each block of data",
        );
        at_least(
            "relay.dot_timeout",
            r.dot_timeout,
            600,
            "the reply to the final dot",
        );
    }
    out
}

/// A running server.
pub struct Server {
    shared: Arc<Shared>,
    /// Disconnects when the acceptor stops accepting.
    stopping: crossbeam_channel::Receiver<()>,
    acceptor: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    waker: Arc<mio::Waker>,
    local_addrs: Vec<SocketAddr>,
    /// The queue runner and how to wake it.
    runner: Option<(
        JoinHandle<()>,
        crossbeam_channel::Sender<crate::queue::Wake>,
    )>,
    /// The control socket, removed at the end.
    socket_path: PathBuf,
    /// Held while the server runs: one daemon per queue.
    _queue_lock: crate::queue::store::Lock,
}

/// The queue directory in force: fixed at start, like the listeners.
fn config_dir(shared: &Shared) -> PathBuf {
    shared.runtime().config.queue.dir.clone()
}

impl Server {
    /// Binds every listener, then starts the acceptor and the workers.
    pub fn start(config: Config, config_path: Option<PathBuf>) -> Result<Server, StartError> {
        let queue = crate::queue::Queue::create(&config.queue.dir).map_err(|e| {
            StartError::System(format!(
                "queue directory {}: {e}",
                config.queue.dir.display()
            ))
        })?;
        let queue_lock = queue
            .lock()
            .and_then(|lock| queue.clean(&lock).map(|()| lock))
            .map_err(|e| {
                StartError::System(format!(
                    "queue directory {}: {e}",
                    config.queue.dir.display()
                ))
            })?;
        // Wake-ups past these are redundant: the runner looks at
        // everything when it wakes.
        let (wake, wake_rx) = crossbeam_channel::bounded(16);
        let inbox = Arc::new(crate::queue::Inbox::default());
        let outbox = crate::queue::Outbox {
            queue: queue.clone(),
            wake: wake.clone(),
            inbox: inbox.clone(),
        };
        let runtime = Runtime::new(config, None, Some(outbox)).map_err(StartError::Config)?;
        let config = &runtime.config;
        for w in config.server.warnings() {
            log::warn!("{w}");
        }
        crate::delivery::spool::prepare(&config.spool_dir).map_err(|e| {
            StartError::System(format!(
                "spool directory {}: {e}",
                config.spool_dir.display()
            ))
        })?;
        let (socket, socket_path) = control::bind(&config.queue.dir).map_err(|e| {
            StartError::System(format!("socket in {}: {e}", config.queue.dir.display()))
        })?;
        // The service manager's sockets, or our own.
        let (listeners, passed) = match activation::take(config)? {
            Some(passed) => (
                passed
                    .into_iter()
                    .map(|(socket, l)| {
                        socket
                            .set_nonblocking(true)
                            .map(|()| (mio::net::TcpListener::from_std(socket), l))
                            .map_err(|e| StartError::System(format!("{}: {e}", l.addr)))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                true,
            ),
            None => (
                config
                    .server
                    .listen
                    .iter()
                    .map(|l| {
                        acceptor::bind(l.addr)
                            .map(|socket| (socket, *l))
                            .map_err(|e| {
                                StartError::System(format!("cannot listen on {}: {e}", l.addr))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                false,
            ),
        };
        let mut local_addrs: Vec<SocketAddr> = Vec::new();
        for (socket, l) in &listeners {
            let Ok(a) = socket.local_addr() else { continue };
            let from = if passed {
                ", from the service manager"
            } else {
                ""
            };
            log::info!("listening on {a} ({}){from}", l.describe());
            local_addrs.push(a);
        }
        // Ports bound, queue, spool and socket set up: root is no longer
        // needed, or (delivering as each system user) only what that
        // needs. No other thread runs yet: they all start with this.
        if let Some(name) = &config.user {
            drop_privileges(name, config)?;
        } else if config.system_users && nix::unistd::geteuid().is_root() {
            keep_only(DELIVERY_CAPABILITIES)?;
        }
        runtime.local.recover();
        let (room, files) = descriptor_room(config);
        log::info!("room for {room} connections at once (descriptor limit {files})");
        if let Some(w) = room_warning(config, room) {
            log::warn!("{w}");
        }
        // Work waits in the acceptor, where a new connection that gets no
        // worker in time is told so; the channel holds a little more
        // than the workers take.
        let (tx, rx) = crossbeam_channel::bounded(config.server.workers);
        let workers_n = config.server.workers;
        let stack = config.server.worker_stack;
        let bound = listeners.iter().map(|(_, l)| *l).collect();
        let shared = Arc::new(Shared {
            runtime: RwLock::new(Arc::new(runtime)),
            config_path,
            bound,
            shutdown: Arc::new(AtomicBool::new(false)),
            stressed: Arc::default(),
            force: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            registry: Registry::default(),
            room,
            notify: notify::Notify::from_env(),
            queued: Arc::default(),
            logins: Arc::default(),
        });
        let live = {
            let shared = shared.clone();
            Arc::new(move || {
                let r = shared.runtime();
                crate::queue::runner::Services {
                    local: r.local.clone(),
                    relay: r.relay.clone(),
                }
            }) as crate::queue::runner::Live
        };
        // What waits in the queue is looked at before connections are
        // taken.
        let runner = crate::queue::Runner::start(queue, live, inbox, shared.queued.clone());
        let (stopping_tx, stopping) = crossbeam_channel::bounded(1);
        // Parked sessions: as many as connections, which the listeners'
        // limits bound.
        let (back_tx, back_rx) = crossbeam_channel::unbounded();
        let acceptor = acceptor::Acceptor::new(
            listeners,
            (tx, rx.clone()),
            stopping_tx,
            shared.clone(),
            back_rx,
        )
        .map_err(|e| StartError::System(format!("cannot start the acceptor: {e}")))?;
        let waker = acceptor.waker();
        let back = pool::Back {
            tx: back_tx,
            waker: waker.clone(),
            pending: acceptor.pending(),
        };
        let acceptor = std::thread::Builder::new()
            .name("acceptor".into())
            .spawn(move || acceptor.run())
            .map_err(|e| StartError::System(format!("cannot start the acceptor thread: {e}")))?;
        let workers = pool::start(workers_n, stack, rx, back, shared.clone())
            .map_err(|e| StartError::System(format!("cannot start worker threads: {e}")))?;
        let runner = std::thread::Builder::new()
            .name("queue".into())
            .spawn(move || runner.run(wake_rx))
            .map_err(|e| StartError::System(format!("cannot start the queue runner: {e}")))?;
        {
            let wake = wake.clone();
            let dir = config_dir(&shared);
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || control::serve(socket, dir, wake))
                .map_err(|e| StartError::System(format!("cannot start the control thread: {e}")))?;
        }
        Ok(Server {
            shared,
            stopping,
            acceptor,
            workers,
            waker,
            local_addrs,
            runner: Some((runner, wake)),
            socket_path,
            _queue_lock: queue_lock,
        })
    }

    /// The bound addresses (with real port numbers when port 0 was asked).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Tells the service manager the server is ready (`READY=1`), if one
    /// asked to be told.
    pub fn notify_ready(&self) {
        self.shared
            .notify
            .send(&format!("READY=1\nSTATUS={}", self.shared.status()));
    }

    /// Asks the server to stop, as SIGTERM does.
    pub fn stop(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Waits until a stop is asked for (signal or [`Server::stop`]), then
    /// lets open transactions finish within the grace period, says 421 to
    /// everyone else, and returns when all workers are done.
    pub fn wait(self) {
        // Returns once the acceptor drops its end: it stopped accepting.
        let _ = self.stopping.recv();
        let force = &self.shared.force;
        let grace = self.shared.runtime().config.server.shutdown_grace;
        log::info!(
            "shutting down: {} open connections",
            self.shared.registry.open_count()
        );
        let registry = &self.shared.registry;
        registry.wake(false);
        // Sessions check the flag before each command, so one that finishes
        // its transaction says 421 by itself.
        if !registry.drained(Instant::now() + grace, force) {
            // Grace is over: wake the rest to say 421, then cut whoever is
            // still stuck (say, writing to a client that does not read).
            registry.wake(true);
            if !registry.drained(Instant::now() + Duration::from_secs(1), force) {
                log::warn!(
                    "closing {} connections that did not end",
                    registry.open_count()
                );
                registry.cut();
            }
        }
        for w in self.workers {
            let _ = w.join();
        }
        if let Some((runner, wake)) = self.runner {
            let _ = std::fs::remove_file(&self.socket_path);
            // The runner finishes the message it is delivering first.
            let _ = wake.send(crate::queue::Wake::Stop);
            let _ = runner.join();
        }
        self.shared.finished.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        let _ = self.acceptor.join();
        log::info!("stopped");
    }
}
