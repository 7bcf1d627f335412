//! The `mailroom` command: reads the command line and hands over to the
//! part that does the work. Called as `sendmail`, `mailq` or `newaliases`
//! (a link to it by that name) it is that command; `mailroom sendmail`,
//! `mailroom mailq` and `mailroom queue` are the same. Exit codes follow
//! sysexits(3): 64 usage, 78 configuration, 71 start-up failure.

#![forbid(unsafe_code)]

use mailroom::config::LogFormat;
use mailroom::server::{self, StartError};
use std::path::PathBuf;
use std::process::ExitCode;

const EX_USAGE: u8 = 64;
const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;

const USAGE: &str = "usage: mailroom [--config FILE]      run the SMTP server in the foreground
       mailroom --check-config FILE  check a configuration file, print what is wrong
       mailroom sendmail [OPTION...] [RECIPIENT...]
                                     hand a message to mailroom, as sendmail(8) does
       mailroom mailq                list the queue, each recipient with its last failure
       mailroom newaliases           check the aliases file and make the daemon reload it
       mailroom reload [-C FILE]     check the configuration and make the daemon reload it
       mailroom passwd [-C FILE] LOGIN
                                     set LOGIN's password in the [auth] users file
       mailroom queue list | flush | delete ID... | hold ID... | release ID...
                                     look at the queue, retry it now, or change it
       mailroom --version            print the version
       mailroom --help               print this

Called as sendmail, mailq or newaliases (a link to this binary), it is
that command. The server logs to stderr (RUST_LOG sets the level; default
info). Without --config it runs on the embedded copy of etc/mailroom.toml.
SIGTERM or SIGINT stop it; SIGHUP reloads the file.";

enum Mode {
    Run(Option<PathBuf>),
    Check(PathBuf),
    Help,
    Version,
}

fn parse_args(mut args: impl Iterator<Item = std::ffi::OsString>) -> Result<Mode, String> {
    let mut mode = Mode::Run(None);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--config" | "-c") => {
                let file = args.next().ok_or("--config needs a file")?;
                mode = Mode::Run(Some(file.into()));
            }
            Some("--check-config") => {
                let file = args.next().ok_or("--check-config needs a file")?;
                mode = Mode::Check(file.into());
            }
            Some("--help" | "-h") => return Ok(Mode::Help),
            Some("--version" | "-V") => return Ok(Mode::Version),
            _ => return Err(format!("unknown argument {}", arg.to_string_lossy())),
        }
    }
    Ok(mode)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The delivery helper a root server runs for each copy it writes as
    // another account (see delivery/helper.rs); not for people.
    let subcommand = args.get(1).map(String::as_str);
    if subcommand == Some("--deliver") {
        return mailroom::delivery::helper::main(&args[2..]);
    }
    let called = args
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("mailroom");
    let front = match (called, subcommand) {
        (name @ ("sendmail" | "mailq" | "newaliases"), _) => Some((name, &args[1..])),
        (_, Some(name @ ("sendmail" | "mailq" | "newaliases"))) => Some((name, &args[2..])),
        _ => None,
    };
    let control = subcommand.filter(|c| ["queue", "reload"].contains(c));
    // Only as `mailroom passwd`: `sendmail passwd` sends to a user.
    if front.is_none() && subcommand == Some("passwd") {
        server::journal::init("warn", LogFormat::Text);
        return mailroom::sendmail::passwd::main(&args[2..]);
    }
    if front.is_some() || control.is_some() {
        // Commands for people and scripts: only warnings are logged, and
        // not even those for newaliases, which prints its findings.
        let aliases = front
            .is_some_and(|(name, rest)| name == "newaliases" || rest.iter().any(|a| a == "-bi"));
        server::journal::init(if aliases { "error" } else { "warn" }, LogFormat::Text);
        return match front {
            Some((name, rest)) => mailroom::sendmail::main(name, rest, server::stdio::serve),
            None => mailroom::sendmail::control::main(control.unwrap_or("queue"), &args[2..]),
        };
    }
    let mode = match parse_args(std::env::args_os().skip(1)) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mailroom: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // The server's configuration first: it says how log lines look.
    let config = match &mode {
        Mode::Run(path) => match server::load(path.as_deref()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("mailroom: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        },
        _ => None,
    };
    // A check prints its findings and nothing else.
    server::journal::init(
        match mode {
            Mode::Check(_) => "error",
            _ => "info",
        },
        config.as_ref().map_or(LogFormat::Text, |c| c.log_format),
    );
    match mode {
        Mode::Help => println!("{USAGE}"),
        Mode::Version => println!("mailroom {}", env!("CARGO_PKG_VERSION")),
        // Only what is wrong is printed: nothing for a good file.
        Mode::Check(path) => match server::check(&path) {
            Ok(findings) => {
                for f in findings {
                    println!("{}: warning: {f}", path.display());
                }
            }
            Err(e) => {
                eprintln!("mailroom: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        },
        Mode::Run(path) => {
            let config = config.expect("loaded above");
            if let Err(e) = server::serve(config, path) {
                eprintln!("mailroom: {e}");
                return ExitCode::from(match e {
                    StartError::Config(_) => EX_CONFIG,
                    StartError::System(_) => EX_OSERR,
                });
            }
        }
    }
    ExitCode::SUCCESS
}
