//! What `sendmail -bs` delivers with: an SMTP session on standard input
//! and output whose accepted messages are dropped into the maildrop, as
//! the plain command drops its one. Recipients are checked as the plain
//! command checks them; a remote one is taken only when there is a relay.

use super::control;
use crate::config::Config;
use crate::delivery::Recipient;
use crate::delivery::{Delivery, DeliveryError, Failure, Local, Lookup, Message};
use crate::queue::envelope::{Envelope, Rcpt};
use crate::queue::maildrop;
use crate::smtp::address::ForwardPath;
use std::io::Read;
use std::time::Instant;

pub struct Dropper {
    config: Config,
    /// The daemon's lookup, where the caller may read what it needs.
    local: Option<Local>,
}

impl Dropper {
    pub fn new(config: Config) -> Dropper {
        Dropper {
            local: super::local_for_checks(&config),
            config,
        }
    }
}

impl Delivery for Dropper {
    fn lookup(&self, rcpt: &ForwardPath) -> Lookup {
        if let Some(remote) = crate::delivery::through_relay(&self.config, rcpt) {
            return remote;
        }
        match &self.local {
            Some(local) => local.lookup(rcpt),
            // Checked when the daemon delivers it.
            None => Lookup::Local(Recipient {
                address: match rcpt {
                    ForwardPath::Postmaster => {
                        format!("postmaster@{}", super::default_domain(&self.config))
                    }
                    ForwardPath::Mailbox(m) => m.to_string(),
                },
                full_name: None,
                dests: Vec::new(),
                missing: Vec::new(),
            }),
        }
    }

    fn deliver(&self, msg: &Message<'_>, _deadline: Instant) -> Result<(), DeliveryError> {
        let temporary = |why: String| DeliveryError::new(Failure::Temporary, why);
        let mut bytes = Vec::with_capacity(msg.body.len() as usize);
        msg.body
            .reader()
            .read_to_end(&mut bytes)
            .map_err(|e| temporary(format!("reading the message: {e}")))?;
        let env = Envelope {
            id: "drop".into(),
            arrived: msg.received.secs,
            sender: msg.reverse_path.to_string(),
            uid: None,
            drop: None,
            ret: msg.dsn.ret,
            envid: msg.dsn.envid.map(str::to_string),
            recipients: msg
                .recipients
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let params = msg.dsn.of(i);
                    Rcpt {
                        notify: params.notify,
                        orcpt: params.orcpt,
                        ..Rcpt::new(r.address.clone())
                    }
                })
                .collect(),
            size: bytes.len() as u64,
        };
        let dir = &self.config.queue.dir;
        maildrop::drop_message(dir, &env, &bytes).map_err(|e| {
            temporary(format!(
                "cannot write to {}: {e}",
                dir.join(maildrop::DIR).display()
            ))
        })?;
        let _ = control::ask(dir, "pickup");
        Ok(())
    }
}
