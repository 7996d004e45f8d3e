//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz checks: every
//! input a fuzzer once kept, or that once crashed Warren, runs in each `cargo test`.

use std::path::Path;

#[test]
fn every_corpus_input_passes_its_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut ran = 0;
    for target in warren_fuzz::TARGETS {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no corpus for {target} at {}: {e}", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            warren_fuzz::run(target, &data).expect("a known target");
            n += 1;
        }
        assert!(n > 0, "the {target} corpus is empty");
        ran += n;
    }
    assert!(ran >= warren_fuzz::TARGETS.len());
}
