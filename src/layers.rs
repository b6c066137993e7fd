//! The layer rule of ARCHITECTURE.md, checked (test-only): every file under
//! `src/` is read, the `crate::` paths it names (and the `super::` paths that
//! climb out of its top-level module) are parsed, and an import of a module
//! above the file's own, or of a peer in the same layer, fails the test.
//!
//! [`LAYERS`] is the one list of layers; ARCHITECTURE.md shows it, and a
//! test fails when the two differ.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, lowest layer first. A module may import modules of
/// lower layers only; modules in one layer are peers and import none of each
/// other. A new top-level module must be placed here.
const LAYERS: &[&[&str]] = &[
    // Pure: identifiers, canonical JSON, signatures, auth rules, state resolution.
    &["protocol"],
    // Leaves knowing nothing of Matrix state: the error type, the HTTP/1.1
    // codec, address ranges, logging, the allocator setup, TLS configs, the
    // metrics registry, systemd notifications.
    &["error", "http1", "net", "logging", "malloc", "tls", "metrics", "systemd"],
    // The config, the socket loop, password and token primitives.
    &["config", "server", "credentials"],
    // The only module with SQL; the password hashing thread.
    &["storage", "hasher"],
    // Rate limits; the request and response types handlers and `App` use.
    &["ratelimit", "request"],
    // The room engine, with its state (`rooms::Engine`).
    &["rooms"],
    // Other servers: what we ask of them, the checks of what they send, the
    // senders that push to them; its state (`remote::Remote`) holds the engine.
    &["remote"],
    // The state every handler gets (`App`), on top of `Remote`.
    &["app"],
    // The client-server and server-server APIs: neither imports the other.
    &["client", "federation"],
    // Request decoding and dispatch to the handlers; the metrics listener.
    &["http", "scrape"],
    // Assembling the node; the command line.
    &["node"],
    &["cli", "main"],
    // Test-only.
    &["endpoints", "fuzz", "layers"],
];

/// One import: the file (relative to `src/`, with `/`) and the top-level
/// module it names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Import {
    file: String,
    module: String,
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The source without comments, string and character literals (lifetimes
/// stay), so that only code is tokenised.
fn strip(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // A raw string: r"...", r#"..."#.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push(' ');
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push(' ');
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether the character before `i` continues an identifier (so `r` there is
/// no raw string prefix).
fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Token::PathSep);
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    tokens
}

/// The first segments of the path (or `{...}` tree of paths) at `at`.
fn first_segments(tokens: &[Token], at: usize) -> Vec<String> {
    match tokens.get(at) {
        Some(Token::Ident(name)) => vec![name.clone()],
        Some(Token::Punct('{')) => {
            let mut names = Vec::new();
            let mut depth = 0;
            let mut item_start = true;
            for token in &tokens[at..] {
                match token {
                    Token::Punct('{') => {
                        depth += 1;
                        if depth == 1 {
                            item_start = true;
                        }
                    }
                    Token::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Token::Punct(',') if depth == 1 => item_start = true,
                    Token::Ident(name) if depth == 1 && item_start => {
                        names.push(name.clone());
                        item_start = false;
                    }
                    _ if depth == 1 => item_start = false,
                    _ => {}
                }
            }
            names
        }
        _ => Vec::new(),
    }
}

/// The top-level modules a file names through `crate::` (or `super::` up to
/// the crate root), given the file's module path (`["client", "sync"]`).
fn imported_modules(source: &str, module_path: &[String]) -> BTreeSet<String> {
    let tokens = tokens(&strip(source));
    let mut found = BTreeSet::new();
    // Inline modules (`mod tests {`) deepen the path; (name, brace depth inside).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                if inline.last().is_some_and(|(_, inside)| *inside == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Punct('{'))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                    continue;
                }
            }
            Token::Ident(word) if word == "crate" && tokens.get(i + 1) == Some(&Token::PathSep) => {
                found.extend(first_segments(&tokens, i + 2));
            }
            Token::Ident(word)
                if word == "super"
                    && tokens.get(i + 1) == Some(&Token::PathSep)
                    && i.checked_sub(1).and_then(|before| tokens.get(before)) != Some(&Token::PathSep) =>
            {
                let mut climbs = 0;
                let mut at = i;
                while matches!(tokens.get(at), Some(Token::Ident(word)) if word == "super")
                    && tokens.get(at + 1) == Some(&Token::PathSep)
                {
                    climbs += 1;
                    at += 2;
                }
                if climbs == module_path.len() + inline.len() {
                    found.extend(first_segments(&tokens, at));
                }
                i = at;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files.sort();
}

/// A file's module path: `client/sync.rs` is `["client", "sync"]`,
/// `client/mod.rs` `["client"]`, `main.rs` the crate root.
fn module_path(relative: &str) -> Vec<String> {
    let trimmed = relative.trim_end_matches(".rs");
    let mut path: Vec<String> = trimmed.split('/').map(str::to_owned).collect();
    if path.last().is_some_and(|last| last == "mod") || trimmed == "main" {
        path.pop();
    }
    path
}

/// A file's top-level module (`main` for the crate root).
fn top_module(relative: &str) -> String {
    relative.split('/').next().unwrap_or(relative).trim_end_matches(".rs").to_owned()
}

/// Every import of a top-level module other than the file's own.
fn imports(src: &Path, top_modules: &BTreeSet<String>) -> Vec<Import> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut imports = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
        let source = std::fs::read_to_string(&file).unwrap();
        let own = top_module(&relative);
        for module in imported_modules(&source, &module_path(&relative)) {
            if module != own && top_modules.contains(&module) {
                imports.push(Import { file: relative.clone(), module });
            }
        }
    }
    imports
}

/// Each module's layer index.
fn layer_of() -> BTreeMap<&'static str, usize> {
    let mut layers = BTreeMap::new();
    for (index, layer) in LAYERS.iter().enumerate() {
        for module in *layer {
            assert!(layers.insert(*module, index).is_none(), "{module} is in two layers");
        }
    }
    layers
}

#[test]
fn imports_only_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = layer_of();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let top_modules: BTreeSet<String> = files
        .iter()
        .map(|file| top_module(&file.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/")))
        .collect();
    for module in &top_modules {
        assert!(layers.contains_key(module.as_str()), "src/{module}: place it in LAYERS");
    }
    for module in layers.keys() {
        assert!(top_modules.contains(*module), "LAYERS names {module}, which is not under src/");
    }
    let mut violations = Vec::new();
    for import in imports(&src, &top_modules) {
        let from = top_module(&import.file);
        if layers[from.as_str()] <= layers[import.module.as_str()] {
            violations.push(format!("src/{} imports {} (not below {from})", import.file, import.module));
        }
    }
    assert!(violations.is_empty(), "imports that go up or sideways:\n{}", violations.join("\n"));
}

/// The layer list ARCHITECTURE.md draws: in its first code block, each line
/// that does not start with a space is one layer, naming its modules as
/// `name/` or `name.rs`.
fn documented_layers(architecture: &str) -> Vec<Vec<String>> {
    let block = architecture.split("```").nth(1).unwrap_or_default();
    block
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with(' '))
        .map(|line| {
            line.split_whitespace()
                .map(|word| word.trim_end_matches(','))
                .filter_map(|word| word.strip_suffix('/').or_else(|| word.strip_suffix(".rs")))
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[test]
fn architecture_md_draws_the_layers_checked_here() {
    let architecture = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md");
    let checked: Vec<Vec<String>> =
        LAYERS.iter().map(|layer| layer.iter().map(|name| name.to_string()).collect()).collect();
    assert_eq!(documented_layers(&architecture), checked, "ARCHITECTURE.md's layer list differs from LAYERS");
}

#[test]
fn paths_in_code_are_found_and_others_are_not() {
    let source = r##"
        use crate::{app::App, error::{Error, Result}, self as root};
        use crate ::storage;
        // use crate::federation;
        /* crate::client /* nested */ crate::node */
        const TEXT: &str = "crate::http";
        const RAW: &str = r#"crate::server"#;
        fn f<'a>(x: &'a str) -> char { let _ = crate::rooms::summary(x); '{' }
        mod tests {
            use super::super::super::protocol;
            use super::super::config;
            use super::helper;
        }
        use super::sibling;
    "##;
    let found = imported_modules(source, &["client".to_owned(), "sync".to_owned()]);
    let expected = ["app", "error", "protocol", "rooms", "self", "storage"];
    assert_eq!(found, expected.iter().map(|name| name.to_string()).collect::<BTreeSet<_>>());
    // From a top-level file, one `super::` reaches the crate root.
    let found = imported_modules("use super::federation::Federation;", &["app".to_owned()]);
    assert!(found.contains("federation"));
    assert_eq!(module_path("client/mod.rs"), ["client"]);
    assert_eq!(module_path("main.rs"), Vec::<String>::new());
    assert_eq!(top_module("federation/join.rs"), "federation");
}
