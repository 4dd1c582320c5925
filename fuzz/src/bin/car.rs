//! Fuzz target `car`: see `ipfs_media_proxy::fuzzing::car` for the input and what it asserts.
//!
//! Built by `cargo afl build` (`--cfg fuzzing`) it is an AFL++ persistent-mode target; built
//! by plain cargo it runs the target once on each file named (or on stdin), to reproduce a crash.

fn main() {
    #[cfg(fuzzing)]
    afl::fuzz!(|data: &[u8]| {
        ipfs_media_proxy::fuzzing::car(data);
    });
    #[cfg(not(fuzzing))]
    ipfs_media_proxy_fuzz::replay_args(ipfs_media_proxy::fuzzing::car);
}
