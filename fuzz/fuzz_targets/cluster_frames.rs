#![no_main]
// See crates/warren-fuzz: the check is shared with the corpus replay in cargo test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_fuzz::cluster_frames(data));
