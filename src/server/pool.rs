//! The worker pool: a fixed number of threads, each taking one connection
//! at a time from the acceptor's channel and running its session to the
//! end. A panic in one session is caught and logged; the worker carries on.

use super::conn::Socket;
use super::driver::{self, Buffers, Context};
use super::{Job, Shared};
use crate::clock::SYSTEM;
use crate::smtp::peer::Peer;
use crate::smtp::reply;
use crate::smtp::session::{Session, TlsPolicy};
use crossbeam_channel::Receiver;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

pub fn start(
    n: usize,
    rx: Receiver<Job>,
    shared: Arc<Shared>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let rx = rx.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    let mut buffers = Buffers::default();
                    // The channel closes when the acceptor stops.
                    for job in rx.iter() {
                        let peer = job.peer;
                        // After a panic the buffers may be gone: the next
                        // session makes new ones.
                        let work = AssertUnwindSafe(|| serve(job, &shared, &mut buffers));
                        if catch_unwind(work).is_err() {
                            log::error!("session with {peer} panicked; the worker carries on");
                        }
                    }
                })
        })
        .collect()
}

fn serve(job: Job, shared: &Shared, buffers: &mut Buffers) {
    let Job {
        stream,
        peer,
        listener,
        ticket,
    } = job;
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
    );
    let ctx = Context {
        config: rt.config.clone(),
        delivery: rt.delivery.clone(),
        shutdown: shared.shutdown.clone(),
        busy: ticket.busy.clone(),
        tls: rt.tls.clone(),
        implicit_tls: listener.implicit_tls(),
    };
    driver::run(Socket::new(stream), session, &ctx, buffers);
    log::info!("disconnect from [{peer}]");
    drop(ticket);
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
