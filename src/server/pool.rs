//! The worker pool: a fixed number of threads, each taking work from the
//! acceptor's channel: a new connection, or a parked session whose client
//! sent more (or whose time ran out). A worker runs a session until it
//! ends or its client has nothing more to say for now; then the session
//! goes back to the acceptor, parked, and an idle client costs a socket,
//! not a worker. A panic in one session is caught and logged; the worker
//! carries on.

use super::conn::Socket;
use super::driver::{Buffers, Context, Driver, Served};
use super::{Job, Parked, Shared, Ticket};
use crate::clock::SYSTEM;
use crate::config::ListenerAuth;
use crate::smtp::peer::Peer;
use crate::smtp::reply;
use crate::smtp::session::{AuthPolicy, Session, TlsPolicy};
use crossbeam_channel::Receiver;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Where workers give parked sessions back: the acceptor's channel, and
/// the waker of its poll; and how much work waits in the acceptor for
/// room in the pool's channel (a worker that takes a job makes room, and
/// wakes the acceptor to fill it).
#[derive(Clone)]
pub struct Back {
    pub tx: crossbeam_channel::Sender<Box<Parked>>,
    pub waker: Arc<mio::Waker>,
    pub pending: Arc<std::sync::atomic::AtomicUsize>,
}

pub fn start(
    n: usize,
    stack: usize,
    rx: Receiver<Job>,
    back: Back,
    shared: Arc<Shared>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let rx = rx.clone();
            let shared = shared.clone();
            let back = back.clone();
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .stack_size(stack)
                .spawn(move || {
                    let mut buffers = Buffers::default();
                    // Another connection waits for a worker.
                    let waiting = || !rx.is_empty();
                    // The channel closes when the acceptor stops.
                    for job in rx.iter() {
                        if back.pending.load(Ordering::Relaxed) > 0 {
                            let _ = back.waker.wake();
                        }
                        let peer = match &job {
                            Job::New { peer, .. } => *peer,
                            Job::Resume(p) | Job::Expire(p) => p.peer,
                        };
                        // After a panic the buffers may be gone: the next
                        // session makes new ones.
                        let work =
                            AssertUnwindSafe(|| serve(job, &shared, &mut buffers, &waiting, &back));
                        if catch_unwind(work).is_err() {
                            log::error!("session with {peer} panicked; the worker carries on");
                        }
                    }
                })
        })
        .collect()
}

fn serve(
    job: Job,
    shared: &Shared,
    buffers: &mut Buffers,
    waiting: &dyn Fn() -> bool,
    back: &Back,
) {
    let (stream, peer, listener, ticket) = match job {
        Job::New {
            stream,
            peer,
            listener,
            ticket,
            ..
        } => (stream, peer, listener, ticket),
        Job::Resume(p) => {
            let Parked {
                session,
                peer,
                ticket,
                watchable,
            } = *p;
            let park = watchable.then_some(waiting);
            let served = Driver::resume(*session, buffers).serve(buffers, park);
            return ended_or_parked(served, peer, ticket, back);
        }
        Job::Expire(p) => {
            let Parked {
                session,
                peer,
                ticket,
                ..
            } = *p;
            Driver::resume(*session, buffers).expire(buffers);
            log::info!("timeout: disconnect from [{peer}]");
            drop(ticket);
            return;
        }
    };
    let rt = shared.runtime();
    if shared.shutdown.load(Ordering::SeqCst) {
        super::acceptor::refuse(
            stream,
            &listener,
            &reply::shutting_down(&rt.config.hostname),
        );
        return;
    }
    let name = if rt.config.reverse_dns {
        confirmed_name(peer.ip())
    } else {
        None
    };
    log::info!(
        "connect from {} [{}]",
        name.as_deref().unwrap_or("unknown"),
        peer
    );
    let policy = TlsPolicy {
        offer: rt.tls.is_some() && !listener.implicit_tls(),
        require: listener.require_tls(),
    };
    let session = Session::new(
        rt.settings.clone(),
        &SYSTEM,
        Peer::Tcp { addr: peer, name },
        policy,
    )
    .with_auth(AuthPolicy {
        offer: listener.auth != ListenerAuth::Off,
        require: listener.auth == ListenerAuth::Require,
    });
    let ctx = Context {
        config: rt.config.clone(),
        delivery: rt.delivery.clone(),
        shutdown: shared.shutdown.clone(),
        busy: ticket.busy.clone(),
        tls: rt.tls.clone(),
        implicit_tls: listener.implicit_tls(),
        stressed: shared.stressed.clone(),
        users: rt.users.clone(),
        logins: shared.logins.clone(),
        milters: rt.config.milters_for(&listener).to_vec(),
        local: stream.local_addr().ok(),
    };
    let served =
        Driver::new(Socket::new(stream), session, ctx, buffers).serve(buffers, Some(waiting));
    ended_or_parked(served, peer, ticket, back);
}

fn ended_or_parked(
    served: Served<Socket>,
    peer: std::net::SocketAddr,
    ticket: Ticket,
    back: &Back,
) {
    match served {
        Served::Ended => {
            log::info!("disconnect from [{peer}]");
            drop(ticket);
        }
        Served::Parked(session) => {
            let parked = Box::new(Parked {
                session,
                peer,
                ticket,
                watchable: true,
            });
            // When the acceptor is gone the connection just closes: the
            // server is at its end.
            if back.tx.send(parked).is_ok() {
                let _ = back.waker.wake();
            }
        }
    }
}

/// Forward-confirmed reverse DNS: the PTR name, only if it resolves back
/// to the same address (as Postfix does; otherwise "unknown").
fn confirmed_name(ip: IpAddr) -> Option<String> {
    let ip = ip.to_canonical();
    let name = dns_lookup::lookup_addr(&ip).ok()?;
    let confirmed = dns_lookup::lookup_host(&name)
        .ok()?
        .any(|a| a.to_canonical() == ip);
    confirmed.then_some(name)
}
