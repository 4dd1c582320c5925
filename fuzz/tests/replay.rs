//! Replays every seed (`corpus/<target>/`) and every kept crash (`regressions/<target>/`)
//! through its target with plain `cargo test`: no fuzzer, no instrumentation needed.
//!
//! A regression whose bug is not fixed yet is named `open-*`: the replay below skips it and
//! an `#[ignore]`d test of its own (at the end of this file) says what it is; when the bug is
//! fixed, drop the `open-` prefix and that test.

use std::path::{Path, PathBuf};

use ipfs_media_proxy::fuzzing;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable directory").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if path.is_file() && !name.starts_with("open-") && !name.starts_with('.') {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no seeds for {target}");
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("a readable input");
            std::panic::catch_unwind(|| run(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} fails on {failed:#?}");
}

/// Replays one kept input (for the `#[ignore]`d open bugs).
#[allow(dead_code)]
fn replay_one(target: &str, file: &str, run: fn(&[u8])) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target)
        .join(file);
    run(&std::fs::read(&path).expect("a readable input"));
}

macro_rules! targets {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), fuzzing::$name);
            }
        )*
    };
}

targets!(
    car,
    unixfs_node,
    walk,
    route_and_media_id,
    denylist,
    byte_range,
    thumbnail_probe,
);

// Open bugs found by the fuzzer (inputs kept as `regressions/<target>/open-*`):
