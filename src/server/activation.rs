//! Socket activation (sd_listen_fds(3)): when the service manager passes
//! the listening sockets (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`),
//! the server listens on those and binds nothing itself, so that a unit
//! needs no capability to serve port 25. Each socket gets a configured
//! listener's role and TLS: the one with its address, else the one with
//! its port (systemd's `ListenStream=25` is `[::]:25`, where the
//! configuration may say `0.0.0.0:25`), else one of the kind its name
//! says (`smtp`, `submission`, `smtps`, as the units in `systemd/` name
//! them), else that kind's defaults. The `listenfd`
//! crate checks that each descriptor is a listening TCP socket, marks it
//! close-on-exec (so a pipe's command never holds the port) and turns it
//! into a `TcpListener`, which takes `unsafe` code this crate does not
//! have.

use super::StartError;
use crate::config::{Config, Listener, ListenerTls, Role};
use std::net::TcpListener;

/// The passed sockets with their listeners, or `None` when nothing was
/// passed to this process.
pub fn take(config: &Config) -> Result<Option<Vec<(TcpListener, Listener)>>, StartError> {
    if std::env::var_os("LISTEN_FDS").is_none() {
        return Ok(None);
    }
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        // LISTEN_FDS for another process (LISTEN_PID), or zero sockets.
        return Ok(None);
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').collect();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        let name = names.get(i).copied().unwrap_or("unknown");
        let socket = fds
            .take_tcp_listener(i)
            .map_err(|e| {
                StartError::System(format!(
                    "socket activation: descriptor {} ({name}): {e}",
                    i + 3
                ))
            })?
            .ok_or_else(|| {
                StartError::System(format!("socket activation: descriptor {} is gone", i + 3))
            })?;
        let addr = socket
            .local_addr()
            .map_err(|e| StartError::System(format!("socket activation: {name}: {e}")))?;
        let listener = listener_for(config, addr, name);
        if listener.needs_certificate() && config.tls.is_none() {
            return Err(StartError::Config(format!(
                "the socket {name} on {addr} ({}) needs TLS: give a [tls] section with cert and key",
                listener.describe()
            )));
        }
        out.push((socket, listener));
    }
    for l in &config.server.listen {
        if !out
            .iter()
            .any(|(_, used)| used.addr.port() == l.addr.port())
        {
            log::info!(
                "not listening on {} ({}): the service manager passes the sockets",
                l.addr,
                l.describe()
            );
        }
    }
    Ok(Some(out))
}

/// The listener a passed socket is: the configured one at its address,
/// else at its port, else the first configured one of the kind its name
/// says, at the socket's address; else that kind's defaults.
pub fn listener_for(config: &Config, addr: std::net::SocketAddr, name: &str) -> Listener {
    let listen = &config.server.listen;
    if let Some(l) = listen.iter().find(|l| l.addr == addr) {
        return *l;
    }
    if let Some(l) = listen.iter().find(|l| l.addr.port() == addr.port()) {
        return Listener { addr, ..*l };
    }
    let (role, implicit) = match name {
        "smtps" => (Role::Submission, true),
        "submission" => (Role::Submission, false),
        _ => (Role::Smtp, false),
    };
    let configured = config
        .server
        .listen
        .iter()
        .find(|l| l.role == role && l.implicit_tls() == implicit);
    match configured {
        Some(l) => Listener { addr, ..*l },
        None => Listener {
            addr,
            role,
            auth: Default::default(),
            milters: None,
            tls: if implicit {
                ListenerTls::Implicit
            } else {
                ListenerTls::Starttls
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "t").unwrap()
    }

    #[test]
    fn a_socket_takes_the_listener_at_its_address_else_its_names_kind() {
        let c = config(
            "[server]\nlisten = [\"127.0.0.1:25\", { address = \"127.0.0.1:587\", role = \"submission\", require_tls = true }]\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
        );
        let at = |s: &str| s.parse().unwrap();
        // The address decides first, whatever the name.
        let l = listener_for(&c, at("127.0.0.1:587"), "smtp");
        assert_eq!(
            (l.role, l.tls),
            (Role::Submission, ListenerTls::RequireStarttls)
        );
        // Else the port, whatever the name.
        let l = listener_for(&c, at("[::]:587"), "unknown");
        assert_eq!(l.addr, at("[::]:587"));
        assert_eq!(
            (l.role, l.tls),
            (Role::Submission, ListenerTls::RequireStarttls)
        );
        // Else the name: the configured submission listener's TLS.
        let l = listener_for(&c, at("[::]:1587"), "submission");
        assert_eq!(l.addr, at("[::]:1587"));
        assert_eq!(
            (l.role, l.tls),
            (Role::Submission, ListenerTls::RequireStarttls)
        );
        let l = listener_for(&c, at("[::]:2500"), "smtp");
        assert_eq!((l.role, l.tls), (Role::Smtp, ListenerTls::Starttls));
        // A kind nothing configures: its defaults.
        let l = listener_for(&c, at("[::]:465"), "smtps");
        assert_eq!((l.role, l.tls), (Role::Submission, ListenerTls::Implicit));
        let l = listener_for(&c, at("[::]:2525"), "unknown");
        assert_eq!((l.role, l.tls), (Role::Smtp, ListenerTls::Starttls));
    }
}
