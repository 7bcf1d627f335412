//! What the server offers, in one list: each row an EHLO keyword (or
//! none) and the verbs HELP names for it, with the condition under which
//! it is offered. The EHLO reply and the HELP reply are both read from
//! it, so they cannot disagree.

use crate::smtp::reply::{Enhanced, Reply};

/// What the conditions are read from.
pub struct Offer {
    pub max_message_size: u64,
    pub vrfy: bool,
    pub expn: bool,
    /// STARTTLS can be started: TLS is configured and not running yet.
    pub starttls: bool,
    /// AUTH can be used: the listener offers it and TLS is running.
    pub auth: bool,
}

#[derive(Clone, Copy)]
enum Keyword {
    None,
    Plain(&'static str),
    /// `SIZE` with the limit (RFC 1870).
    Size,
    /// `AUTH` with the mechanisms (RFC 4954).
    Auth,
}

#[derive(Clone, Copy)]
enum When {
    Always,
    Vrfy,
    Expn,
    StartTls,
    Auth,
}

/// A verb and its place in the HELP reply.
type Verb = (u8, &'static str);

struct Row {
    keyword: Keyword,
    verbs: &'static [Verb],
    when: When,
}

const fn row(keyword: Keyword, verbs: &'static [Verb], when: When) -> Row {
    Row {
        keyword,
        verbs,
        when,
    }
}

/// In the order EHLO lists them; HELP puts the verbs in their own order.
/// VRFY and EXPN are RFC 5321 verbs that HELP always names (VRFY answers
/// 252 when it is off); the keywords only say that they really answer.
const ROWS: [Row; 14] = [
    row(
        Keyword::None,
        &[
            (0, "HELO"),
            (1, "EHLO"),
            (4, "MAIL"),
            (5, "RCPT"),
            (6, "DATA"),
            (8, "RSET"),
            (9, "NOOP"),
            (10, "QUIT"),
            (12, "VRFY"),
            (13, "EXPN"),
        ],
        When::Always,
    ),
    row(Keyword::Plain("PIPELINING"), &[], When::Always),
    row(Keyword::Size, &[], When::Always),
    row(Keyword::Plain("VRFY"), &[], When::Vrfy),
    row(Keyword::Plain("EXPN"), &[], When::Expn),
    row(
        Keyword::Plain("STARTTLS"),
        &[(2, "STARTTLS")],
        When::StartTls,
    ),
    row(Keyword::Auth, &[(3, "AUTH")], When::Auth),
    row(Keyword::Plain("8BITMIME"), &[], When::Always),
    row(Keyword::Plain("ENHANCEDSTATUSCODES"), &[], When::Always),
    row(Keyword::Plain("CHUNKING"), &[(7, "BDAT")], When::Always),
    row(Keyword::Plain("BINARYMIME"), &[], When::Always),
    row(Keyword::Plain("SMTPUTF8"), &[], When::Always),
    row(Keyword::Plain("DSN"), &[], When::Always),
    row(Keyword::Plain("HELP"), &[(11, "HELP")], When::Always),
];

impl Offer {
    fn offered(&self) -> impl Iterator<Item = &'static Row> + '_ {
        ROWS.iter().filter(|r| match r.when {
            When::Always => true,
            When::Vrfy => self.vrfy,
            When::Expn => self.expn,
            When::StartTls => self.starttls,
            When::Auth => self.auth,
        })
    }

    /// The EHLO keywords, one reply line each.
    pub fn keywords(&self) -> Vec<String> {
        self.offered()
            .filter_map(|r| match r.keyword {
                Keyword::None => None,
                Keyword::Plain(k) => Some(k.to_string()),
                Keyword::Size => Some(format!("SIZE {}", self.max_message_size)),
                Keyword::Auth => Some(format!("AUTH {}", crate::smtp::sasl::MECHANISMS)),
            })
            .collect()
    }

    /// The reply to HELP.
    pub fn help(&self) -> Reply {
        let mut verbs: Vec<Verb> = self.offered().flat_map(|r| r.verbs).copied().collect();
        verbs.sort_unstable();
        let verbs: Vec<&str> = verbs.into_iter().map(|(_, v)| v).collect();
        Reply::new(214, Some(Enhanced(2, 0, 0)), "mailroom commands:")
            .line(verbs.join(" "))
            .line("See RFC 5321; mail for local users only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(vrfy: bool, expn: bool, starttls: bool) -> Offer {
        Offer {
            max_message_size: 1000,
            vrfy,
            expn,
            starttls,
            auth: false,
        }
    }

    #[test]
    fn keywords_follow_their_conditions() {
        assert_eq!(
            offer(false, false, false).keywords(),
            [
                "PIPELINING",
                "SIZE 1000",
                "8BITMIME",
                "ENHANCEDSTATUSCODES",
                "CHUNKING",
                "BINARYMIME",
                "SMTPUTF8",
                "DSN",
                "HELP"
            ]
        );
        let all = offer(true, true, true).keywords();
        assert_eq!(all[2..5], ["VRFY", "EXPN", "STARTTLS"]);
        assert_eq!(all.len(), 12);
        let auth = Offer {
            auth: true,
            ..offer(false, false, false)
        };
        assert_eq!(auth.keywords()[2], "AUTH PLAIN LOGIN");
    }

    #[test]
    fn help_names_the_verbs_offered() {
        let verbs = |o: Offer| o.help().lines().nth(1).unwrap().to_string();
        assert_eq!(
            verbs(offer(false, false, false)),
            "HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN"
        );
        assert_eq!(
            verbs(offer(false, false, true)),
            "HELO EHLO STARTTLS MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN"
        );
        assert_eq!(offer(true, true, true).help().code(), 214);
        let auth = Offer {
            auth: true,
            ..offer(false, false, false)
        };
        assert_eq!(
            verbs(auth),
            "HELO EHLO AUTH MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN"
        );
    }
}
