//! The crate's module graph is a DAG with data flowing one way: each top-level module of
//! `src/` has a layer, and may use only modules of lower layers (and its own submodules).
//! The layers, lowest first, are the README's architecture picture:
//!
//! ```text
//! 10 fuzzing                      (test facade)
//! 9  server                       listen, accept, connection workers
//! 8  layers                       the one tower stack around the app
//! 7  app                          route -> authorise -> resolve -> respond
//! 6  respond                      download, thumbnail, federation answers
//! 5  error                        every failure -> status + errcode, once
//! 4  resolve  auth                cache then one shared fetch; token checks
//! 3  ipfs  cache  homeserver  access_log  reload
//! 2  config  denylist  router  capabilities  admin
//! 1  media  budget                media IDs, types, headers, ranges, thumbnailing (no I/O);
//!                                 bytes held by running fetches
//! 0  body  byte_range  metrics  forwarding  worker  chain  connection  allocator
//! ```
//!
//! A lower layer that reached up (say `ipfs` using `error`'s Matrix mapping) fails here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const LAYERS: &[(&str, u8)] = &[
    ("allocator", 0),
    ("body", 0),
    ("byte_range", 0),
    ("metrics", 0),
    ("forwarding", 0),
    ("worker", 0),
    ("chain", 0),
    ("media", 1),
    ("connection", 1),
    ("budget", 1),
    ("config", 2),
    ("denylist", 2),
    ("router", 2),
    ("capabilities", 2),
    ("admin", 2),
    ("ipfs", 3),
    ("cache", 3),
    ("homeserver", 3),
    ("access_log", 3),
    ("reload", 3),
    ("resolve", 4),
    ("auth", 4),
    ("upload", 4),
    ("error", 5),
    ("respond", 6),
    ("app", 7),
    ("layers", 8),
    ("server", 9),
    ("fuzzing", 10),
];

/// Uses that still reach up; each must still exist, so the list only shrinks.
const KNOWN: &[(&str, &str)] = &[];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for the crate root and `main`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The top-level modules named by `crate::x` in the code (comments left out).
fn uses(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn modules_use_only_lower_layers() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let src = src();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    let mut known_seen = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(&layer) = layers.get(module.as_str()) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(&text) {
            if used == module {
                continue;
            }
            if KNOWN.contains(&(module.as_str(), used.as_str())) {
                known_seen.push((module.clone(), used));
                continue;
            }
            match layers.get(used.as_str()) {
                Some(&other) if other < layer => {}
                Some(&other) => wrong.push(format!(
                    "{}: `{module}` (layer {layer}) uses `{used}` (layer {other})",
                    file.display()
                )),
                None => wrong.push(format!(
                    "{}: uses `crate::{used}`, which has no layer",
                    file.display()
                )),
            }
        }
    }
    for (module, used) in KNOWN {
        if !known_seen.iter().any(|(m, u)| m == module && u == used) {
            wrong.push(format!(
                "`{module}` no longer uses `{used}`: drop it from KNOWN"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The config schema is read at the edge: the app (and the server and reload, which deal in
/// whole configurations) turn it into each layer's own settings, so no lower layer depends
/// on how a key is spelled or defaulted.
#[test]
fn the_config_schema_stays_at_the_edge() {
    const EDGE: &[&str] = &["app", "server", "reload"];
    let src = src();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if module == "config" || EDGE.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        if uses(&text).iter().any(|used| used == "config") {
            wrong.push(format!(
                "{}: `{module}` uses the config schema",
                file.display()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Matrix errcodes are written in one place: the mapping in `error.rs`.
#[test]
fn errcodes_are_written_only_in_the_error_mapping() {
    let src = src();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        if file.ends_with("error.rs") {
            continue;
        }
        // Reading a homeserver's errcode (the federation check) is not writing one.
        let reads_only = file.ends_with("auth.rs");
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("\"M_") && !(reads_only && code.contains("== Some(\"M_")) {
                wrong.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The check itself finds what it is meant to find.
#[test]
fn the_check_reads_uses_and_skips_comments() {
    let text = "use crate::error::RequestError;\n// crate::app is not used\nlet x = crate::media::sniff::resolve(a, b);";
    assert_eq!(uses(text), ["error", "media"]);
    assert_eq!(
        module_of(Path::new("/s"), Path::new("/s/ipfs/gateway.rs")).as_deref(),
        Some("ipfs")
    );
    assert_eq!(module_of(Path::new("/s"), Path::new("/s/lib.rs")), None);
}
