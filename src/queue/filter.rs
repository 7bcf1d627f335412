//! Mail handed in with `sendmail` passes `[relay] milters` when the
//! daemon picks it up from the maildrop, as Postfix's `non_smtpd_milters`
//! do in its cleanup: the user who sent it has gone, so what a milter
//! says becomes what the queue does. A refusal (5xx) fails the recipients
//! it names, and the sender gets the usual bounce; a tempfail (4xx, or a
//! milter that cannot be asked under `default_action = "tempfail"`)
//! leaves the drop where it is, to be taken at a later pickup; discard
//! queues the message as already done. Edits (header fields, body,
//! sender, recipients, quarantine) are made before it is queued.

use super::envelope::{Envelope, Rcpt, Record};
use crate::config::Milter;
use crate::delivery::spool::Spool;
use crate::delivery::Body;
use crate::milter::{bare_address, Chain, Client, Verdict};
use crate::smtp::reply::{self, Reply};
use std::path::Path;

/// What the pickup needs to run its milters.
pub struct Filters<'a> {
    pub milters: &'a [Milter],
    pub spool_dir: &'a Path,
    /// Where quarantined mail goes; without it, it fails.
    pub quarantine: Option<&'a str>,
    pub hostname: &'a str,
    pub max_size: u64,
}

/// What the milters made of a drop.
pub enum Outcome {
    /// Queue it (its envelope edited), with these records written with
    /// it, and the message as the milters left it if they changed it.
    Queue {
        records: Vec<Record>,
        rewritten: Option<Spool>,
    },
    /// Leave it in the maildrop for now, for this reason.
    Later(String),
}

/// Runs the drop of `uid` with envelope `env` and message `body` past
/// the milters; the envelope is edited as they ask.
pub fn run(f: &Filters, env: &mut Envelope, uid: u32, body: Body<'_>, now: i64) -> Outcome {
    let user = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let client = Client {
        hostname: f.hostname.to_string(),
        addr: None,
        name: None,
        user: Some(user),
        local: None,
    };
    let (mut chain, v) = Chain::open(f.milters, client);
    let outcome = converse(&mut chain, v, f, env, body, now);
    chain.quit();
    outcome
}

fn converse(
    chain: &mut Chain,
    connected: Verdict,
    f: &Filters,
    env: &mut Envelope,
    body: Body<'_>,
    now: i64,
) -> Outcome {
    if let Some(r) = connected.refusal() {
        return refused(env, &r, now);
    }
    if let Some(r) = chain.helo("localhost").refusal() {
        return refused(env, &r, now);
    }
    if let Some(r) = chain
        .mail(&env.id, &[format!("<{}>", env.sender)])
        .refusal()
    {
        return refused(env, &r, now);
    }
    let mut records = Vec::new();
    let mut taken = 0;
    for n in 0..env.recipients.len() {
        match chain.rcpt(&[format!("<{}>", env.recipients[n].address)]) {
            Verdict::Refuse(r) if r.code() < 500 => {
                chain.abort();
                return Outcome::Later(shown(&r));
            }
            Verdict::Refuse(r) => records.extend(failed(env, n, &r, now)),
            Verdict::Go | Verdict::Discard => taken += 1,
        }
    }
    if taken == 0 {
        chain.abort();
        return Outcome::Queue {
            records,
            rewritten: None,
        };
    }
    let eom = chain.message(body, false, f.spool_dir, f.max_size);
    match eom.verdict {
        Verdict::Refuse(r) => return refused(env, &r, now),
        Verdict::Discard => {
            log::info!("{}: discarded by a milter", env.id);
            let done = (0..env.recipients.len())
                .map(|rcpt| Record::Done { rcpt, at: now })
                .collect();
            return Outcome::Queue {
                records: done,
                rewritten: None,
            };
        }
        Verdict::Go => {}
    }
    if let Some(from) = &eom.from {
        env.sender = bare_address(from).to_string();
        log::info!("{}: sender changed by a milter to <{}>", env.id, env.sender);
    }
    for gone in eom.del_rcpts.iter().map(|r| bare_address(r)) {
        for (n, r) in env.recipients.iter().enumerate() {
            if r.address.eq_ignore_ascii_case(gone) {
                log::info!("{}: to=<{gone}> removed by a milter", env.id);
                records.push(Record::Done { rcpt: n, at: now });
            }
        }
    }
    for added in eom.add_rcpts.iter().map(|r| bare_address(r)) {
        log::info!("{}: to=<{added}> added by a milter", env.id);
        env.recipients.push(Rcpt::new(added));
    }
    if let Some(reason) = &eom.quarantine {
        match f.quarantine {
            Some(mailbox) => {
                log::info!(
                    "{}: quarantined by a milter ({reason}); delivered to <{mailbox}> only",
                    env.id
                );
                records
                    .extend((0..env.recipients.len()).map(|rcpt| Record::Done { rcpt, at: now }));
                env.recipients.push(Rcpt::new(mailbox));
            }
            None => {
                log::info!("{}: quarantined by a milter ({reason}); refused", env.id);
                return refused(env, &reply::quarantined(), now);
            }
        }
    }
    Outcome::Queue {
        records,
        rewritten: eom.rewritten,
    }
}

/// The reply as one line, for logs and bounces.
fn shown(r: &Reply) -> String {
    r.render(true).trim_end().replace("\r\n", " ")
}

/// A refusal of the whole message: for now (4xx), or for good (5xx).
fn refused(env: &Envelope, r: &Reply, now: i64) -> Outcome {
    if r.code() < 500 {
        return Outcome::Later(shown(r));
    }
    log::info!("{}: refused by a milter: {}", env.id, shown(r));
    Outcome::Queue {
        records: (0..env.recipients.len())
            .flat_map(|n| failed(env, n, r, now))
            .collect(),
        rewritten: None,
    }
}

/// The records of a recipient a milter refused for good.
fn failed(env: &Envelope, n: usize, r: &Reply, now: i64) -> [Record; 2] {
    let status = r.enhanced().map_or("5.7.1".to_string(), |e| e.to_string());
    [
        Record::Failed {
            rcpt: n,
            at: now,
            status,
            dest: env.recipients[n].address.clone(),
            notify: None,
            reason: format!("refused by a content filter: {}", shown(r)),
        },
        Record::Done { rcpt: n, at: now },
    ]
}
