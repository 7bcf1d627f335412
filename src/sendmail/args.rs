//! The sendmail command line, as callers of `/usr/sbin/sendmail` write it
//! (getopt rules, as Sendmail and Postfix parse it: `-ti` is `-t -i`, a
//! value may follow its letter or be the next argument). Flags that only
//! tuned Sendmail itself are accepted and ignored, so that old scripts keep
//! working; anything unknown is a usage error that names it. Pure.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read a message and send it (`-bm`, the default).
    Deliver,
    /// Speak SMTP on standard input and output (`-bs`).
    Smtp,
    /// List the queue (`-bp`, `mailq`).
    List,
    /// Retry the queue now (`-q`).
    RunQueue,
    /// Say what would become of each recipient; send nothing (`-bv`).
    Verify,
    /// Rebuild the aliases database (`-bi`, `newaliases`): there is none,
    /// the aliases file is read as it is.
    Aliases,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// Recipients given as arguments (each may be a list).
    pub recipients: Vec<String>,
    /// `-t`: recipients from To:, Cc: and Bcc: too.
    pub extract: bool,
    /// `-i`, `-oi`: a line with a lone dot does not end the message.
    pub ignore_dots: bool,
    /// `-f`, `-r`: the envelope sender.
    pub sender: Option<String>,
    /// `-F`: the full name in a From: field that is added.
    pub full_name: Option<String>,
    /// `-C`: the configuration file.
    pub config: Option<PathBuf>,
    /// `-N`: DSN NOTIFY for every recipient.
    pub notify: Option<String>,
    /// `-R`: DSN RET.
    pub ret: Option<String>,
    /// `-V`: DSN ENVID.
    pub envid: Option<String>,
    /// `-v`: say what happened.
    pub verbose: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Letters that take a value.
const WITH_VALUE: &str = "ABCFLNORVXbdefhopr";
/// Letters taken and ignored: Sendmail's tuning, meaningless here.
const IGNORED_FLAGS: &str = "GIUmnx";

/// What the command does by the name it was called by (`mailq`,
/// `newaliases`), before its arguments.
pub fn mode_of_name(name: &str) -> Mode {
    match name {
        "mailq" => Mode::List,
        "newaliases" => Mode::Aliases,
        _ => Mode::Deliver,
    }
}

pub fn parse(mode: Mode, args: &[String]) -> Result<Options, UsageError> {
    let mut o = Options {
        mode,
        recipients: Vec::new(),
        extract: false,
        ignore_dots: false,
        sender: None,
        full_name: None,
        config: None,
        notify: None,
        ret: None,
        envid: None,
        verbose: false,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            o.recipients.extend(args[i..].iter().cloned());
            break;
        }
        let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) else {
            o.recipients.push(arg.clone());
            continue;
        };
        for (at, letter) in cluster.char_indices() {
            let rest = &cluster[at + letter.len_utf8()..];
            if letter == 'q' {
                // -q alone or with an interval (-q15m): retry now either way.
                o.mode = Mode::RunQueue;
                break;
            }
            if WITH_VALUE.contains(letter) {
                let value = if !rest.is_empty() {
                    rest.to_string()
                } else if i < args.len() {
                    i += 1;
                    args[i - 1].clone()
                } else {
                    return Err(UsageError(format!("option -{letter} needs a value")));
                };
                with_value(&mut o, letter, value)?;
                break;
            }
            match letter {
                't' => o.extract = true,
                'i' => o.ignore_dots = true,
                'v' => o.verbose = true,
                c if IGNORED_FLAGS.contains(c) => {}
                c => return Err(UsageError(format!("unknown option -{c}"))),
            }
        }
    }
    Ok(o)
}

fn with_value(o: &mut Options, letter: char, value: String) -> Result<(), UsageError> {
    match letter {
        'f' | 'r' => o.sender = Some(value),
        'F' => o.full_name = Some(value),
        'C' => o.config = Some(PathBuf::from(value)),
        'N' => o.notify = Some(check_notify(value)?),
        'R' => {
            let v = value.to_ascii_lowercase();
            if v != "full" && v != "hdrs" {
                return Err(UsageError(format!("-R {value}: must be full or hdrs")));
            }
            o.ret = Some(v);
        }
        'V' => {
            // RFC 3461 4.4: printable ASCII, at most 100 characters.
            if value.is_empty()
                || value.len() > 100
                || !value.bytes().all(|b| (0x21..0x7f).contains(&b))
            {
                return Err(UsageError(format!(
                    "-V {value:?}: an envelope id is 1 to 100 printable ASCII characters"
                )));
            }
            o.envid = Some(value);
        }
        'b' => {
            o.mode = match value.as_str() {
                "m" => Mode::Deliver,
                "s" => Mode::Smtp,
                "p" => Mode::List,
                "v" => Mode::Verify,
                "i" => Mode::Aliases,
                // Purging a host status cache: there is none.
                "h" | "H" => o.mode,
                "d" | "D" => {
                    return Err(UsageError(
                        "-bd: the daemon is started as `mailroom`, not through sendmail".into(),
                    ))
                }
                other => return Err(UsageError(format!("unknown mode -b{other}"))),
            }
        }
        // -oi and -oQ/var/spool...: only the first means anything here.
        'o' if value == "i" => o.ignore_dots = true,
        // -A (sendmail.cf or submit.cf), -B (body type), -L (log label),
        // -O (option=value), -X (traffic log), -d (debug), -e (error mode),
        // -h (hop count), -p (protocol): Sendmail's tuning.
        _ => {}
    }
    Ok(())
}

fn check_notify(value: String) -> Result<String, UsageError> {
    if let Some(n) = crate::smtp::command::Notify::parse(&value) {
        Ok(n.words())
    } else {
        Err(UsageError(format!(
            "-N {value}: must be never, or a list of success, failure and delay"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, UsageError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(Mode::Deliver, &args)
    }

    #[test]
    fn what_callers_write() {
        let o = p(&["-t", "-i"]).unwrap();
        assert!(o.extract && o.ignore_dots && o.recipients.is_empty());
        let o = p(&["-ti", "-f", "root@box", "bob", "carol@x.example"]).unwrap();
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("root@box"));
        assert_eq!(o.recipients, ["bob", "carol@x.example"]);
        // cron: sendmail -FCronDaemon -i -B8BITMIME -oem root
        let o = p(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]).unwrap();
        assert_eq!(o.full_name.as_deref(), Some("CronDaemon"));
        assert_eq!(o.recipients, ["root"]);
        // PHP: sendmail -t -i -f www-data@box
        let o = p(&[
            "-oi",
            "-odi",
            "-oQ/var/spool/x",
            "-r",
            "<>",
            "-Am",
            "-v",
            "-x",
        ])
        .unwrap();
        assert!(o.ignore_dots && o.verbose);
        assert_eq!(o.sender.as_deref(), Some("<>"));
        let o = p(&[
            "-N",
            "success,FAILURE",
            "-R",
            "hdrs",
            "-V",
            "QQ314",
            "a@b.example",
        ])
        .unwrap();
        assert_eq!(o.notify.as_deref(), Some("success,failure"));
        assert_eq!(o.ret.as_deref(), Some("hdrs"));
        assert_eq!(o.envid.as_deref(), Some("QQ314"));
        let o = p(&["-C", "/tmp/m.toml", "--", "-not-an-option@x.example"]).unwrap();
        assert_eq!(o.config, Some(PathBuf::from("/tmp/m.toml")));
        assert_eq!(o.recipients, ["-not-an-option@x.example"]);
    }

    #[test]
    fn modes() {
        let mode = |args: &[&str]| p(args).map(|o| o.mode);
        assert_eq!(mode(&[]), Ok(Mode::Deliver));
        assert_eq!(mode(&["-bs"]), Ok(Mode::Smtp));
        assert_eq!(mode(&["-bp"]), Ok(Mode::List));
        assert_eq!(mode(&["-b", "v", "x"]), Ok(Mode::Verify));
        assert_eq!(mode(&["-q"]), Ok(Mode::RunQueue));
        assert_eq!(mode(&["-q30m"]), Ok(Mode::RunQueue));
        assert_eq!(mode(&["-bi"]), Ok(Mode::Aliases));
        assert_eq!(mode_of_name("mailq"), Mode::List);
        assert_eq!(mode_of_name("sendmail"), Mode::Deliver);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |args: &[&str]| p(args).unwrap_err().0;
        assert_eq!(err(&["-k"]), "unknown option -k");
        assert_eq!(err(&["-tk"]), "unknown option -k");
        assert_eq!(err(&["-f"]), "option -f needs a value");
        assert_eq!(err(&["-bz"]), "unknown mode -bz");
        assert!(err(&["-bd"]).contains("mailroom"));
        assert!(err(&["-N", "sometimes"]).contains("-N sometimes"));
        assert!(err(&["-R", "most"]).contains("full or hdrs"));
        assert!(err(&["-V", "has space"]).contains("-V"));
    }
}
