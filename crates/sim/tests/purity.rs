//! The pure-crate rule (ARCHITECTURE.md, architecture.md §2 "Cores", style.md
//! items 3 and 12): `types`, `epaxos`, `executor` and `decision` never touch
//! I/O, clocks, threads, the environment or OS randomness, so the
//! deterministic simulator can replay any run from its seed.
//!
//! This is a text check, not a type check: it scans every `.rs` file under
//! each pure crate's `src/` for forbidden paths (comment lines skipped, and
//! the part of a line after `//`), and each pure crate's `Cargo.toml`
//! dependency tables for forbidden crates. It cannot see through a new
//! dependency that pulls one of those in transitively; review new
//! dependencies of pure crates by hand.

use std::fs;
use std::path::{Path, PathBuf};

/// The crates that must stay pure, as directory names under `crates/`.
const PURE_CRATES: [&str; 4] = ["types", "epaxos", "executor", "decision"];

/// Source text that means I/O, clocks, threads, environment or OS randomness.
/// `std`'s `HashMap::new()`/`HashSet::new()` use `RandomState`, which seeds
/// itself from the OS: pure crates use a fixed hasher or B-trees instead.
/// (A text check: `HashMap::default()` with the default hasher slips through;
/// review catches that one.)
const FORBIDDEN_SOURCE: [&str; 15] = [
    "tokio",
    "std::net",
    "std::fs",
    "std::time",
    "Instant::now",
    "SystemTime",
    "thread_rng",
    "rand::",
    "getrandom",
    "std::thread",
    "std::env",
    "RandomState",
    "HashMap::new",
    "HashSet::new",
    "HashMap::with_capacity",
];

/// Crates a pure crate may not depend on.
const FORBIDDEN_DEPENDENCIES: [&str; 5] = ["tokio", "rand", "getrandom", "mio", "socket2"];

/// One rule broken at one place.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    found: &'static str,
    text: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}` in: {}",
            self.file,
            self.line,
            self.found,
            self.text.trim()
        )
    }
}

/// The part of `line` before a `//` comment that is not inside a string
/// literal. A line that starts with `//` (including `///` and `//!` docs)
/// yields "".
fn code_part(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// True if `needle` occurs in `hay` not directly after an identifier
/// character (so `rand::` does not match `operand::`).
fn contains_token(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(at, _)| {
        hay[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

/// Scans Rust source text; `file` only labels the violations.
fn scan_source(file: &str, text: &str) -> Vec<Violation> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = code_part(line);
        for pattern in FORBIDDEN_SOURCE {
            if contains_token(code, pattern) {
                found.push(Violation {
                    file: file.to_string(),
                    line: n + 1,
                    found: pattern,
                    text: line.to_string(),
                });
            }
        }
    }
    found
}

/// Scans a `Cargo.toml` for forbidden crates in `[dependencies]`,
/// `[target.*.dependencies]` and `[dependencies.<name>]` tables, by key and
/// by `package = "..."` rename.
fn scan_manifest(file: &str, text: &str) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut in_deps = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            let table = line.trim_matches(|c| c == '[' || c == ']').trim();
            in_deps = table == "dependencies"
                || (table.starts_with("target.") && table.ends_with(".dependencies"));
            // `[dependencies.tokio]`
            if let Some(name) = table.strip_prefix("dependencies.") {
                in_deps = true;
                check_dependency_name(file, n, raw, name.trim_matches('"'), &mut found);
            }
            continue;
        }
        if !in_deps || line.is_empty() {
            continue;
        }
        if let Some(key) = line.split(['=', '.']).next() {
            check_dependency_name(file, n, raw, key.trim().trim_matches('"'), &mut found);
        }
        if let Some(at) = line.find("package") {
            let rest = line[at + "package".len()..].trim_start();
            if let Some(rest) = rest.strip_prefix('=') {
                let name = rest.trim_start().trim_start_matches('"');
                let name = name.split('"').next().unwrap_or("");
                check_dependency_name(file, n, raw, name, &mut found);
            }
        }
    }
    found
}

fn check_dependency_name(file: &str, n: usize, raw: &str, name: &str, found: &mut Vec<Violation>) {
    if let Some(bad) = FORBIDDEN_DEPENDENCIES.iter().find(|bad| **bad == name) {
        found.push(Violation {
            file: file.to_string(),
            line: n + 1,
            found: bad,
            text: raw.to_string(),
        });
    }
}

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/sim has a parent")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, sorted so reports are stable.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn report(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("  {v}\n"))
        .collect::<String>()
}

/// architecture.md §2 "Cores": no I/O, clocks, threads, env or OS randomness
/// in the source of a pure crate.
#[test]
fn pure_crates_source_has_no_io_clocks_or_os_randomness() {
    let root = crates_dir();
    let mut violations = Vec::new();
    let mut scanned = 0;
    for krate in PURE_CRATES {
        let src = root.join(krate).join("src");
        let files = rust_files(&src);
        assert!(
            !files.is_empty(),
            "no sources found under {}",
            src.display()
        );
        for file in files {
            let text = fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            violations.extend(scan_source(&file.display().to_string(), &text));
            scanned += 1;
        }
    }
    assert!(
        violations.is_empty(),
        "pure crates must not do I/O, read clocks, spawn threads, read the \
         environment or use OS randomness ({scanned} files scanned):\n{}",
        report(&violations)
    );
}

/// architecture.md §2 "Cores": no pure crate depends on an async runtime,
/// a socket crate or an OS randomness crate.
#[test]
fn pure_crates_manifests_have_no_forbidden_dependencies() {
    let root = crates_dir();
    let mut violations = Vec::new();
    for krate in PURE_CRATES {
        let manifest = root.join(krate).join("Cargo.toml");
        let text = fs::read_to_string(&manifest)
            .unwrap_or_else(|e| panic!("read {}: {e}", manifest.display()));
        violations.extend(scan_manifest(&manifest.display().to_string(), &text));
    }
    assert!(
        violations.is_empty(),
        "pure crates must not depend on {FORBIDDEN_DEPENDENCIES:?}:\n{}",
        report(&violations)
    );
}

/// The checker can fail (quality-bars.md R2 in spirit): a clock read is
/// reported with its line, comments are not, and look-alike identifiers are
/// not confused with forbidden paths.
#[test]
fn checker_reports_a_clock_read() {
    let text = "\
//! Docs may mention std::time freely.
fn tick() -> u64 {
    let start = std::time::Instant::now(); // and so may trailing comments: tokio
    let url = \"http://example\"; let operand::x = 1;
    0
}
";
    let found = scan_source("example.rs", text);
    let patterns: Vec<&str> = found.iter().map(|v| v.found).collect();
    assert_eq!(
        patterns,
        ["std::time", "Instant::now"],
        "got:\n{}",
        report(&found)
    );
    assert!(found.iter().all(|v| v.line == 3 && v.file == "example.rs"));
    assert!(format!("{}", found[0]).starts_with("example.rs:3: `std::time`"));
}

/// The manifest checker can fail: direct, table and renamed forms.
#[test]
fn checker_reports_forbidden_dependencies() {
    let text = r#"
[package]
name = "tokio-free"

[dependencies]
serde.workspace = true
tokio = { version = "1", features = ["rt"] }
fast = { package = "rand", version = "0.9" }

[dev-dependencies]
mio = "1"

[target.'cfg(unix)'.dependencies]
socket2 = "0.5"

[dependencies.getrandom]
version = "0.3"
"#;
    let found = scan_manifest("Cargo.toml", text);
    let names: Vec<&str> = found.iter().map(|v| v.found).collect();
    assert_eq!(
        names,
        ["tokio", "rand", "socket2", "getrandom"],
        "got:\n{}",
        report(&found)
    );
}
