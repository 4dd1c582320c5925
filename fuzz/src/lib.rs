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
