//! The layering holds by construction, not by comment: the arrows between
//! the parts of `src/` point one way (the sockets and the sendmail front
//! end -> notices -> the queue -> the relay and delivery -> the protocol
//! core), nothing imports `server`, and the protocol core in
//! `src/smtp/` uses nothing of the crate outside itself, none of std but
//! a short list of modules without IO (no files, sockets, processes,
//! clock, threads or environment), and no crate but `log`.
//!
//! The core is checked against what it may use (an allow-list), so that a
//! new module of the crate, a new dependency or a new corner of std is
//! refused until someone decides it belongs there. Only code counts: a
//! file is read up to its `#[cfg(test)]` module, comments are skipped, and
//! `use` groups (`use std::{fs, io}`) are expanded into their paths. The
//! checker is tested on made-up sources too, so that it can be seen to
//! fail.

use std::path::{Path, PathBuf};

/// std modules the core may use: types and algorithms, no IO.
const CORE_STD: &[&str] = &[
    "borrow",
    "char",
    "cmp",
    "collections",
    "convert",
    "error",
    "fmt",
    "hash",
    "iter",
    "mem",
    "num",
    "ops",
    "option",
    "result",
    "slice",
    "str",
    "string",
    "sync",
    "vec",
];

/// What the modules of one part of `src/` may not use, besides what
/// every part may not (the server).
fn denied(part: &str) -> &'static [&'static str] {
    match part {
        "config" => &[
            "delivery", "notices", "clock", "queue", "relay", "sendmail", "net",
        ],
        "delivery" => &["notices", "queue", "relay", "sendmail"],
        "queue" => &["notices", "sendmail"],
        "relay" => &["notices", "queue", "sendmail"],
        "net" => &["delivery", "notices", "queue", "relay", "sendmail"],
        _ => &[],
    }
}

/// The part of `src/` a file belongs to, and how deep its module is
/// (`smtp/mod.rs` 1, `smtp/peer.rs` 2, `smtp/session/phase.rs` 3).
fn part_of(src: &Path, file: &Path) -> (String, usize) {
    let rel = file.strip_prefix(src).unwrap();
    let names: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let part = names[0].trim_end_matches(".rs").to_string();
    let depth = names.len() - usize::from(names.last().is_some_and(|n| n == "mod.rs"));
    (part, depth)
}

/// The code of a file: up to its tests, without comments.
fn code(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("").to_string()))
        .collect()
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.len() - 1];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .flat_map(|i| expand(i).into_iter().map(move |p| format!("{prefix}{p}")))
        .collect()
}

/// Every path the code names: those of `use` declarations, expanded, and
/// those written in full elsewhere (`std::fs::read`), with their lines.
fn paths(code: &[(usize, String)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in code {
        let trimmed = line.trim();
        let start = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p));
        if let Some((first, text)) = &mut pending {
            text.push_str(trimmed);
            if trimmed.ends_with(';') {
                out.extend(
                    expand(text.trim_end_matches(';'))
                        .into_iter()
                        .map(|p| (*first, p)),
                );
                pending = None;
            }
            continue;
        }
        if let Some(rest) = start {
            if rest.ends_with(';') {
                out.extend(
                    expand(rest.trim_end_matches(';'))
                        .into_iter()
                        .map(|p| (*n, p)),
                );
            } else {
                pending = Some((*n, rest.to_string()));
            }
            continue;
        }
        // A path written in full: a word followed by `::`, not itself
        // after `::`.
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(at) = line[i..].find("::") {
            let end = i + at;
            let mut begin = end;
            while begin > 0
                && (bytes[begin - 1].is_ascii_alphanumeric() || bytes[begin - 1] == b'_')
            {
                begin -= 1;
            }
            let after_sep = begin >= 2 && &line[begin - 2..begin] == "::";
            if !after_sep && begin < end {
                let rest: String = line[begin..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                out.push((*n, rest.trim_end_matches(':').to_string()));
            }
            i = end + 2;
        }
    }
    out
}

/// The crates this package depends on, as code names them.
fn dependencies() -> Vec<String> {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let mut deps = Vec::new();
    let mut inside = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
            continue;
        }
        if inside {
            if let Some((name, _)) = line.split_once('=') {
                deps.push(name.trim().replace('-', "_"));
            }
        }
    }
    deps
}

/// Every line of `text`, a file of `part` at module depth `depth`, that
/// uses what it may not, as `line: path (why)`.
fn violations(part: &str, depth: usize, text: &str, deps: &[String]) -> Vec<String> {
    let code = code(text);
    let mut found = Vec::new();
    let mut flag = |n: usize, what: &str, why: &str| found.push(format!("{n}: {what} ({why})"));
    for (n, path) in paths(&code) {
        let segments: Vec<&str> = path.split("::").collect();
        let root = segments[0];
        let next = segments.get(1).copied().unwrap_or("");
        if root == "crate" && next == "server" && part != "server" {
            flag(n, &path, "nothing imports the server");
        }
        if root == "crate" && denied(part).contains(&next) {
            flag(n, &path, "the arrows point the other way");
        }
        if part != "smtp" {
            continue;
        }
        let supers = segments.iter().take_while(|s| **s == "super").count();
        match root {
            "crate" if next != "smtp" => flag(n, &path, "the core uses nothing outside itself"),
            "super" if supers >= depth => flag(n, &path, "leaves the core"),
            "std" if !CORE_STD.contains(&next) => flag(n, &path, "no IO in the core"),
            "std" | "core" | "alloc" if path.contains("SystemTime") || path.contains("Instant") => {
                flag(n, &path, "the clock comes in through trace::Clock")
            }
            r if r != "log" && deps.iter().any(|d| d == r) => {
                flag(n, &path, "the core uses no crate but log")
            }
            _ => {}
        }
    }
    if part == "smtp" {
        for (n, line) in &code {
            for word in ["SystemTime", "Instant"] {
                if line
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == word)
                {
                    flag(*n, word, "the clock comes in through trace::Clock");
                }
            }
        }
    }
    found
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
    let deps = dependencies();
    assert!(deps.iter().any(|d| d == "crossbeam_channel"), "{deps:?}");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    let mut core_files = 0;
    for file in &files {
        let (part, depth) = part_of(&src, file);
        core_files += usize::from(part == "smtp");
        let text = std::fs::read_to_string(file).unwrap();
        for v in violations(&part, depth, &text, &deps) {
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
    let deps: Vec<String> = ["log", "serde", "nix", "crossbeam_channel"]
        .map(String::from)
        .to_vec();
    let check = |part: &str, depth: usize, text: &str| violations(part, depth, text, &deps);
    let core = "use std::{fs::File, io::Read};\nuse crate::config::Config;\n\
                let t = SystemTime::now();\nuse core::net::IpAddr; // std::fs in a comment\n\
                let i = std::time::Instant::now();\nuse serde::Deserialize;\n\
                use super::super::config;\nlet f = nix::unistd::getpid();\n\
                use crate::{smtp::reply,\n    queue::Queue};\n\
                #[cfg(test)]\nuse std::fs;\n";
    let found = check("smtp", 2, core);
    let lines: Vec<&str> = found.iter().map(|f| f.split(':').next().unwrap()).collect();
    assert_eq!(
        lines,
        ["1", "1", "2", "5", "6", "7", "8", "9", "3", "5"],
        "{found:#?}"
    );
    assert!(found
        .iter()
        .any(|f| f.starts_with("9: crate::queue::Queue")));
    // What the core may use.
    let fine =
        "use std::sync::Arc;\nuse core::fmt::{self, Write as _};\nuse super::reply::Reply;\n\
                use crate::smtp::command::Command;\nlet x = log::info!(\"x\");\n\
                let instants = MyInstant::new();\nuse super::super::command;\n";
    assert_eq!(check("smtp", 3, fine), Vec::<String>::new());
    // Two levels up from a file of the core is the crate.
    assert_eq!(check("smtp", 2, "use super::super::command;\n").len(), 1);
    // The other parts: only their arrows.
    assert_eq!(
        check("delivery", 2, "use crate::server::Runtime;\n").len(),
        1
    );
    assert_eq!(
        check("delivery", 2, "use crate::{notices, smtp};\n").len(),
        1
    );
    assert!(check("delivery", 2, "use std::fs::File;\nuse nix::unistd;\n").is_empty());
    assert!(check("config", 2, "use crate::smtp::data::BareNewline;\n").is_empty());
    assert_eq!(check("config", 2, "use crate::delivery::Local;\n").len(), 1);
    assert!(check("server", 2, "use crate::server::conn;\n").is_empty());
}
