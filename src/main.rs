//! The `mailroom` command: parse the command line, load and validate the
//! configuration, start the server and wait for it to stop. Exit codes
//! follow sysexits(3): 64 usage, 78 configuration, 71 start-up failure.

#![forbid(unsafe_code)]

use mailroom::config::ConfigError;
use mailroom::config::{self, Config};
use mailroom::server::{Runtime, Server, StartError};
use std::path::PathBuf;
use std::process::ExitCode;

const EX_USAGE: u8 = 64;
const EX_OSERR: u8 = 71;
const EX_CONFIG: u8 = 78;

const USAGE: &str = "usage: mailroom [--config FILE]
       mailroom --check-config FILE
       mailroom --version

Runs the SMTP server in the foreground, logging to stderr (RUST_LOG sets
the level; default info). Without --config it runs on the embedded copy of
etc/mailroom.toml. SIGTERM or SIGINT stop it; SIGHUP reloads the file.";

enum Mode {
    Run(Option<PathBuf>),
    Check(PathBuf),
}

fn parse_args() -> Result<Mode, String> {
    let mut args = std::env::args_os().skip(1);
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
            Some("--help" | "-h") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Some("--version" | "-V") => {
                println!("mailroom {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {}", arg.to_string_lossy())),
        }
    }
    Ok(mode)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The delivery helper a root server runs for each copy it writes as
    // another account (see delivery/helper.rs); not for people.
    if args.get(1).map(String::as_str) == Some("--deliver") {
        return mailroom::delivery::helper::main(&args[2..]);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mode = match parse_args() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mailroom: {e}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match mode {
        Mode::Check(path) => match Config::load(&path).and_then(|c| {
            Runtime::new(c, None).map_err(|message| ConfigError {
                file: path.display().to_string(),
                key: None,
                message,
            })
        }) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mailroom: {e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Mode::Run(path) => {
            let loaded = match &path {
                Some(p) => Config::load(p),
                None => Ok(Config::embedded()),
            };
            let config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mailroom: {e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            log::info!(
                "mailroom {} starting with {}",
                env!("CARGO_PKG_VERSION"),
                path.as_ref()
                    .map_or(config::EMBEDDED_NAME.to_string(), |p| p
                        .display()
                        .to_string())
            );
            match Server::start(config, path) {
                Ok(server) => {
                    log::info!(
                        "ready: {} workers on {} listeners",
                        server.workers(),
                        server.local_addrs().len()
                    );
                    server.wait();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mailroom: {e}");
                    ExitCode::from(match e {
                        StartError::Config(_) => EX_CONFIG,
                        StartError::System(_) => EX_OSERR,
                    })
                }
            }
        }
    }
}
