//! Shared by the fuzz targets' plain (not AFL++) builds.

use std::io::Read as _;

/// Runs `target` on each file named on the command line, or on stdin when none is.
pub fn replay_args(target: fn(&[u8])) {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .expect("stdin is readable");
        target(&data);
    }
    for file in files {
        eprintln!("{file}");
        target(&std::fs::read(&file).expect("a readable input"));
    }
}

/// The whole `main` of a fuzz target named after its entry point in
/// `ipfs_media_proxy::fuzzing`. Built by `cargo afl build` (`--cfg fuzzing`) it is an AFL++
/// persistent-mode target; built by plain cargo it runs the target once on each file named
/// (or on stdin), to reproduce a crash.
#[macro_export]
macro_rules! target {
    ($name:ident) => {
        fn main() {
            #[cfg(fuzzing)]
            afl::fuzz!(|data: &[u8]| {
                ipfs_media_proxy::fuzzing::$name(data);
            });
            #[cfg(not(fuzzing))]
            $crate::replay_args(ipfs_media_proxy::fuzzing::$name);
        }
    };
}
