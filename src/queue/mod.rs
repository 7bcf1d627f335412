//! The queue: mail that is not delivered while its sender waits. Local
//! programs drop messages into it through the sendmail command
//! ([`maildrop`]); the daemon keeps each one durably ([`store`], in the
//! format of [`envelope`]) and a runner thread delivers it, retries it and
//! reports on it ([`runner`]), in notices composed by [`dsn`] and queued
//! like any message ([`queue_notice`]). [`list`] is what `mailq` shows.

pub mod dsn;
pub mod envelope;
mod filter;
pub mod list;
pub mod maildrop;
mod outbound;
pub mod runner;
pub mod store;

pub use runner::{Inbox, Runner, Wake};
pub use store::{Place, Queue};

/// The daemon's socket in the queue directory: anyone may ask it to look
/// in the maildrop, retry the queue, or list it.
pub const SOCKET: &str = "mailroom.sock";

/// The queue as the SMTP side sees it: where it puts what cannot be
/// finished while its client waits (notices to remote senders), and how
/// it tells the runner.
#[derive(Clone)]
pub struct Outbox {
    pub queue: Queue,
    pub wake: crossbeam_channel::Sender<Wake>,
    pub inbox: std::sync::Arc<Inbox>,
}

impl Outbox {
    /// Queues a message for recipients whose copies are not all made
    /// (`records` says which are) and wakes the runner; see
    /// [`queue_message`].
    pub fn put(
        &self,
        sender: &str,
        recipients: Vec<envelope::Rcpt>,
        body: crate::delivery::Body<'_>,
        records: &[envelope::Record],
    ) -> std::io::Result<String> {
        let id = queue_message(&self.queue, sender, recipients, body, records)?;
        self.tell(&id);
        Ok(id)
    }

    /// Queues a notice and wakes the runner for it.
    pub fn notice(
        &self,
        config: &crate::config::Config,
        n: &Notice<'_>,
    ) -> std::io::Result<String> {
        let id = queue_notice(&self.queue, config, n)?;
        self.tell(&id);
        Ok(id)
    }

    /// Hands the runner a message just queued.
    fn tell(&self, id: &str) {
        self.inbox.push(id.to_string());
        // A full channel holds a wake-up already, and the inbox keeps the
        // id until the runner looks.
        let _ = self.wake.try_send(Wake::Queued);
    }
}

/// A delivery status notification to queue (see [`dsn::compose`]).
pub struct Notice<'a> {
    /// The message reported on: its id, arrival and ENVID.
    pub original_id: &'a str,
    pub arrival: crate::smtp::trace::UnixTime,
    pub envid: Option<&'a str>,
    pub kind: dsn::Kind,
    /// The message's header, or all of it when `full`.
    pub returned: &'a [u8],
    pub full: bool,
    pub to: &'a str,
    /// NOTIFY for the notice's own recipient: NEVER for one to postmaster.
    pub notify: Option<envelope::Notify>,
    pub entries: &'a [dsn::Entry],
}

/// Queues a notice from the null sender; its queue id. The runner is to
/// be told of it.
pub fn queue_notice(
    queue: &Queue,
    config: &crate::config::Config,
    n: &Notice<'_>,
) -> std::io::Result<String> {
    use crate::smtp::trace::Clock as _;
    let clock = &crate::clock::SYSTEM;
    let now = clock.now();
    let id = clock.queue_id();
    let text = dsn::compose(&dsn::Report {
        hostname: &config.hostname,
        id: &id,
        original_id: n.original_id,
        to: n.to,
        arrival: n.arrival,
        now,
        kind: n.kind,
        entries: n.entries,
        returned: n.returned,
        full: n.full,
        envid: n.envid,
    });
    let mut spool = crate::delivery::spool::Spool::create(&config.spool_dir)?;
    spool.write(&text)?;
    let notice = envelope::Envelope {
        id: id.clone(),
        arrived: now.secs,
        sender: String::new(),
        uid: None,
        drop: None,
        ret: None,
        envid: None,
        recipients: vec![envelope::Rcpt {
            notify: n.notify,
            ..envelope::Rcpt::new(n.to)
        }],
        size: text.len() as u64,
    };
    queue.put(&notice, b"", spool.body())?;
    log::info!(
        "{}: notice {id} to <{}> for {} recipients",
        n.original_id,
        n.to,
        n.entries.len()
    );
    Ok(id)
}

/// Queues a message as it is (`body` starts with its `Received:` field)
/// for `recipients` (alias and `.forward` members elsewhere, or local ones
/// to retry): from then on it is the queue's, with its own retries and
/// bounces to `sender`. `records` are what is already known of them.
pub fn queue_message(
    queue: &Queue,
    sender: &str,
    recipients: Vec<envelope::Rcpt>,
    body: crate::delivery::Body<'_>,
    records: &[envelope::Record],
) -> std::io::Result<String> {
    use crate::smtp::trace::Clock as _;
    let clock = &crate::clock::SYSTEM;
    let id = clock.queue_id();
    let env = envelope::Envelope {
        id: id.clone(),
        arrived: clock.now().secs,
        sender: sender.to_string(),
        uid: None,
        drop: None,
        ret: None,
        envid: None,
        recipients,
        size: body.len(),
    };
    queue.put_with(&env, b"", body, records)?;
    Ok(id)
}
