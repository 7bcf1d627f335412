//! The layering holds by construction, not by comment: the arrows between
//! the parts of `src/` point one way (the sockets and the front ends ->
//! delivery and notices -> the protocol core), nothing imports `server`,
//! and the protocol core in `src/smtp/` imports nothing of the crate
//! outside itself and none of std's IO (files, sockets, processes, the
//! clock, threads, the environment), nor any crate but `log`.
//!
//! Only code counts: a file is read up to its `#[cfg(test)]` module, and
//! comments are skipped. The checker is tested on made-up sources too, so
//! that it can be seen to fail.

use std::path::{Path, PathBuf};

/// What a part of `src/` may not name, as (pattern, why).
fn forbidden(part: &str) -> Vec<(&'static str, &'static str)> {
    let mut rules = vec![("crate::server", "nothing imports the server")];
    match part {
        "smtp" => rules.extend([
            ("crate::config", "the core takes plain settings"),
            ("crate::delivery", "the core asks for lookups as actions"),
            ("crate::notices", "the core imports nothing outside itself"),
            ("crate::clock", "time and ids come in through trace::Clock"),
            ("std::fs", "no files in the core"),
            (
                "std::net",
                "no sockets in the core (core::net has the types)",
            ),
            ("std::os", "no system calls in the core"),
            ("std::process", "no processes in the core"),
            ("std::thread", "no threads in the core"),
            ("std::env", "no environment in the core"),
            ("std::io", "no IO in the core"),
            ("SystemTime", "the clock comes in from outside"),
            ("Instant", "the clock comes in from outside"),
            ("nix::", "no system calls in the core"),
            ("rustls", "TLS is the driver's"),
            ("mio", "polling is the acceptor's"),
            ("libc", "no system calls in the core"),
        ]),
        "config" => rules.extend([
            (
                "crate::delivery",
                "configuration is read before anything uses it",
            ),
            (
                "crate::notices",
                "configuration is read before anything uses it",
            ),
        ]),
        "delivery" => rules.extend([(
            "crate::notices",
            "notices use delivery, not the other way round",
        )]),
        _ => {}
    }
    rules
}

/// The part of `src/` a file belongs to: its folder, or its name.
fn part_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// The code of a file: up to its tests, without comments.
fn code(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
        .collect()
}

/// Every line of `text` (a file of `part`) that names what `part` may
/// not, as `line: text (why)`.
fn violations(part: &str, text: &str) -> Vec<String> {
    let rules = forbidden(part);
    let mut found = Vec::new();
    for (n, line) in code(text) {
        for (pattern, why) in &rules {
            if contains_word(line, pattern) {
                found.push(format!("{n}: {} ({why})", line.trim()));
            }
        }
        // A file of the core reaching up and out through `super`.
        if part == "smtp" && line.contains("super::super::super") {
            found.push(format!("{n}: {} (leaves the core)", line.trim()));
        }
    }
    found
}

/// `pattern` in `line`, not as part of a longer name.
fn contains_word(line: &str, pattern: &str) -> bool {
    line.match_indices(pattern).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + pattern.len()..].chars().next();
        let name = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !name(before) && (pattern.ends_with("::") || !name(after))
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_arrows_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    let mut core_files = 0;
    for file in &files {
        let part = part_of(&src, file);
        if part == "server" {
            continue;
        }
        core_files += usize::from(part == "smtp");
        let text = std::fs::read_to_string(file).unwrap();
        for v in violations(&part, &text) {
            found.push(format!("{}:{v}", file.display()));
        }
    }
    assert!(
        core_files >= 10,
        "the core was not found: {core_files} files"
    );
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn the_checker_finds_what_it_looks_for() {
    let core = "use std::fs::File;\nuse crate::config::Config;\nlet t = SystemTime::now();\n\
                use core::net::IpAddr; // std::fs in a comment is fine\n\
                let i = Instant::now();\n#[cfg(test)]\nuse std::fs;\n";
    let found = violations("smtp", core);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found[0].starts_with("1: use std::fs::File;"));
    assert!(found[1].starts_with("2: use crate::config::Config;"));
    assert!(found[2].starts_with("3: "));
    assert!(found[3].starts_with("5: "));
    // A longer name that contains a forbidden one is not it.
    assert!(violations("smtp", "let instants = MyInstant::new();\n").is_empty());
    assert!(violations("delivery", "use crate::server::Runtime;\n").len() == 1);
    assert!(violations("delivery", "use crate::notices;\n").len() == 1);
    assert!(violations("delivery", "use std::fs::File;\n").is_empty());
    assert!(violations("config", "use crate::smtp::data::BareNewline;\n").is_empty());
}
