//! The acceptor thread: one `mio::Poll` over every listener, the signals
//! (SIGTERM, SIGINT, SIGHUP) and a waker. It accepts until `WouldBlock`,
//! hands each connection to the pool without ever blocking, and answers
//! 421 itself when the pool's queue is full or the client has too many
//! connections open.

use super::{admit, Job, Shared};
use crate::config::Listener;
use crate::smtp::reply::{self, Reply};
use crossbeam_channel::{Sender, TrySendError};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
}

impl Acceptor {
    pub fn new(
        mut listeners: Vec<(TcpListener, Listener)>,
        tx: Sender<Job>,
        stopping: Sender<()>,
        shared: Arc<Shared>,
    ) -> io::Result<Acceptor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        for (i, (l, _)) in listeners.iter_mut().enumerate() {
            poll.registry().register(l, Token(i), Interest::READABLE)?;
        }
        Ok(Acceptor {
            poll,
            waker,
            signals,
            listeners,
            tx: Some(tx),
            stopping: Some(stopping),
            shared,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Accepts until a stop is asked for, then closes the listeners and
    /// the channel (which tells the workers to finish) and keeps watching
    /// the signals, so that a second SIGTERM or SIGINT can hurry the
    /// shutdown, until the server is finished.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        // After an accept error (out of file descriptors, say) pending
        // connections raise no new event, so poll again soon and retry.
        let mut retry = false;
        loop {
            let timeout = retry.then(|| Duration::from_millis(100));
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
                    Token(i) => ready.push(i),
                }
            }
            if self.shared.finished.load(Ordering::SeqCst) {
                return;
            }
            if self.shared.shutdown.load(Ordering::SeqCst) {
                if self.tx.is_some() {
                    self.stop_accepting();
                }
                continue;
            }
            if retry {
                ready = (0..self.listeners.len()).collect();
            }
            retry = false;
            for i in ready {
                retry |= !self.accept_all(i);
            }
        }
    }

    fn stop_accepting(&mut self) {
        for (l, _) in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        self.tx = None;
        self.stopping = None;
        log::info!("no longer accepting connections");
    }

    fn signals(&mut self) {
        for sig in self.signals.pending() {
            match sig {
                // The new configuration is swapped in only at the end of a
                // reload, so a panic part-way keeps the old one; caught
                // here, it cannot stop the accepting either.
                SIGHUP => {
                    let shared = &self.shared;
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.reload()))
                        .is_err()
                    {
                        log::error!("reload failed (a bug), keeping the old configuration");
                    }
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
    fn accept_all(&mut self, i: usize) -> bool {
        let listener = self.listeners[i].1;
        loop {
            match self.listeners[i].0.accept() {
                Ok((stream, peer)) => self.dispatch(TcpStream::from(stream), peer, listener),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return false;
                }
            }
        }
    }

    fn dispatch(&mut self, stream: TcpStream, peer: SocketAddr, listener: Listener) {
        let rt = self.shared.runtime();
        let host = &rt.config.hostname;
        let ip = peer.ip().to_canonical();
        let refuse = |stream, r: &Reply| refuse(stream, &listener, r);
        let Some(tx) = &self.tx else {
            refuse(stream, &reply::shutting_down(host));
            return;
        };
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
        match tx.try_send(Job {
            stream,
            peer,
            listener,
            ticket,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                log::warn!("refused {peer}: all workers busy and the queue is full");
                refuse(job.stream, &reply::too_busy(host));
            }
            Err(TrySendError::Disconnected(job)) => refuse(job.stream, &reply::shutting_down(host)),
        }
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
