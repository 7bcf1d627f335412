//! The server's side of a SASL exchange in SMTP AUTH (RFC 4954), for the
//! PLAIN (RFC 4616) and LOGIN mechanisms: what to answer to `AUTH MECH
//! [initial-response]` and to each line the client sends after a `334`,
//! until there is a login and a password to check, or a reply that ends
//! the exchange. Pure: the session keeps what is awaited between lines,
//! and the password is checked elsewhere.

use super::encoding::base64_decode;
use super::reply::{self, Reply};
use std::fmt;

/// The mechanisms offered, as EHLO's `AUTH` line lists them.
pub const MECHANISMS: &str = "PLAIN LOGIN";

/// LOGIN's prompts, base64 of "Username:" and "Password:".
const USERNAME: &str = "VXNlcm5hbWU6";
const PASSWORD: &str = "UGFzc3dvcmQ6";

/// What the exchange waits for in the client's next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaiting {
    /// PLAIN's one message, after an empty challenge.
    Plain,
    /// LOGIN's user name.
    LoginUser,
    /// LOGIN's password, for this user.
    LoginPassword(String),
}

/// A login and its password, as the client gave them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub login: String,
    pub password: String,
}

/// Never the password, in a log line or a panic.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// One step of the exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this `334` and read the client's next line for what is awaited.
    Challenge(Reply, Awaiting),
    /// The client said who it is: check the password.
    Check(Credentials),
    /// The exchange is over, unauthenticated: send this.
    Refuse(Reply),
}

/// `AUTH mechanism [initial-response]`. An initial response of `=` is an
/// empty one (RFC 4954 4).
pub fn start(mechanism: &str, initial: Option<&str>) -> Step {
    let awaiting = if mechanism.eq_ignore_ascii_case("PLAIN") {
        Awaiting::Plain
    } else if mechanism.eq_ignore_ascii_case("LOGIN") {
        Awaiting::LoginUser
    } else {
        return Step::Refuse(reply::auth_mechanism_unknown());
    };
    match initial {
        Some(line) => respond(awaiting, line),
        None => Step::Challenge(challenge(&awaiting), awaiting),
    }
}

/// The client's line after a `334`: `*` cancels (RFC 4954 4).
pub fn respond(awaiting: Awaiting, line: &str) -> Step {
    if line == "*" {
        return Step::Refuse(reply::auth_cancelled());
    }
    let decoded = if line == "=" {
        Some(Vec::new())
    } else {
        base64_decode(line)
    };
    let Some(octets) = decoded else {
        return Step::Refuse(reply::auth_undecodable(
            "Cannot decode the response: not base64",
        ));
    };
    let Ok(text) = String::from_utf8(octets) else {
        return Step::Refuse(reply::auth_undecodable(
            "Cannot decode the response: not UTF-8",
        ));
    };
    match awaiting {
        Awaiting::Plain => plain(&text),
        Awaiting::LoginUser if text.is_empty() || text.contains('\0') => {
            Step::Refuse(reply::auth_undecodable("Malformed LOGIN user name"))
        }
        Awaiting::LoginUser => {
            let next = Awaiting::LoginPassword(text);
            Step::Challenge(challenge(&next), next)
        }
        Awaiting::LoginPassword(login) => Step::Check(Credentials {
            login,
            password: text,
        }),
    }
}

fn challenge(awaiting: &Awaiting) -> Reply {
    reply::auth_challenge(match awaiting {
        Awaiting::Plain => "",
        Awaiting::LoginUser => USERNAME,
        Awaiting::LoginPassword(_) => PASSWORD,
    })
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`. An authorization
/// identity other than the login itself is refused: nobody acts as
/// anyone else here.
fn plain(message: &str) -> Step {
    let mut parts = message.split('\0');
    let (Some(authzid), Some(login), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Step::Refuse(reply::auth_undecodable("Malformed PLAIN response"));
    };
    if login.is_empty() {
        return Step::Refuse(reply::auth_undecodable("Malformed PLAIN response"));
    }
    if !authzid.is_empty() && authzid != login {
        return Step::Refuse(reply::auth_other_identity());
    }
    Step::Check(Credentials {
        login: login.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::encoding::base64_encode;

    fn check(login: &str, password: &str) -> Step {
        Step::Check(Credentials {
            login: login.into(),
            password: password.into(),
        })
    }

    fn code(step: &Step) -> String {
        match step {
            Step::Challenge(r, _) | Step::Refuse(r) => r.render(true),
            Step::Check(c) => format!("check {c:?}"),
        }
    }

    #[test]
    fn plain_with_and_without_an_initial_response() {
        let msg = base64_encode(b"\0alice\0secret pass");
        assert_eq!(start("PLAIN", Some(&msg)), check("alice", "secret pass"));
        assert_eq!(start("plain", Some(&msg)), check("alice", "secret pass"));
        let Step::Challenge(r, awaiting) = start("PLAIN", None) else {
            panic!("no challenge")
        };
        assert_eq!(r.render(true), "334 \r\n");
        assert_eq!(respond(awaiting, &msg), check("alice", "secret pass"));
        // The authorization identity may name the login itself.
        let same = base64_encode(b"alice\0alice\0pw");
        assert_eq!(start("PLAIN", Some(&same)), check("alice", "pw"));
        // An empty password is the password checker's to refuse.
        let empty = base64_encode(b"\0alice\0");
        assert_eq!(start("PLAIN", Some(&empty)), check("alice", ""));
    }

    #[test]
    fn login_asks_for_the_user_then_the_password() {
        let Step::Challenge(r, awaiting) = start("LOGIN", None) else {
            panic!("no challenge")
        };
        assert_eq!(r.render(true), "334 VXNlcm5hbWU6\r\n");
        let Step::Challenge(r, awaiting) = respond(awaiting, &base64_encode(b"alice")) else {
            panic!("no password challenge")
        };
        assert_eq!(r.render(true), "334 UGFzc3dvcmQ6\r\n");
        assert_eq!(
            respond(awaiting, &base64_encode(b"s3cret")),
            check("alice", "s3cret")
        );
        // The user name as an initial response (as some clients send it).
        let Step::Challenge(r, awaiting) = start("LOGIN", Some(&base64_encode(b"bob"))) else {
            panic!("no password challenge")
        };
        assert_eq!(r.render(true), "334 UGFzc3dvcmQ6\r\n");
        assert_eq!(awaiting, Awaiting::LoginPassword("bob".into()));
    }

    #[test]
    fn what_ends_an_exchange_unauthenticated() {
        let refused = [
            // Unknown mechanisms.
            (start("CRAM-MD5", None), "504 5.5.4 "),
            (start("GSSAPI", Some("abcd")), "504 5.5.4 "),
            // Cancelled, at any step.
            (respond(Awaiting::Plain, "*"), "501 5.0.0 "),
            (respond(Awaiting::LoginUser, "*"), "501 5.0.0 "),
            (
                respond(Awaiting::LoginPassword("a".into()), "*"),
                "501 5.0.0 ",
            ),
            (start("PLAIN", Some("*")), "501 5.0.0 "),
            // Not base64, or not UTF-8.
            (respond(Awaiting::Plain, "not base64!"), "501 5.5.2 "),
            (respond(Awaiting::Plain, "AGFsaWNl="), "501 5.5.2 "),
            (respond(Awaiting::LoginUser, "YWxpY2U"), "501 5.5.2 "),
            (
                respond(Awaiting::Plain, &base64_encode(b"\0al\xffice\0pw")),
                "501 5.5.2 ",
            ),
            // PLAIN without its two NULs, with more, or with no login.
            (
                start("PLAIN", Some(&base64_encode(b"alice pw"))),
                "501 5.5.2 ",
            ),
            (
                start("PLAIN", Some(&base64_encode(b"\0alice"))),
                "501 5.5.2 ",
            ),
            (
                start("PLAIN", Some(&base64_encode(b"\0a\0b\0c"))),
                "501 5.5.2 ",
            ),
            (
                start("PLAIN", Some(&base64_encode(b"\0\0pw"))),
                "501 5.5.2 ",
            ),
            (start("PLAIN", Some("=")), "501 5.5.2 "),
            // LOGIN with an empty user name.
            (respond(Awaiting::LoginUser, "="), "501 5.5.2 "),
            // Acting as someone else.
            (
                start("PLAIN", Some(&base64_encode(b"ceo\0printer\0pw"))),
                "535 5.7.8 ",
            ),
        ];
        for (i, (step, want)) in refused.iter().enumerate() {
            assert!(
                matches!(step, Step::Refuse(_)) && code(step).starts_with(want),
                "case {i}: {} (want {want})",
                code(step)
            );
        }
    }

    #[test]
    fn the_password_is_never_in_debug_output() {
        let step = start("PLAIN", Some(&base64_encode(b"\0alice\0hunter2")));
        let shown = format!("{step:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
