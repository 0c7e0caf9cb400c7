//! What the fuzzer found or kept (`fuzz/`, `cargo +nightly fuzz run annotate`), and the
//! fixture captures (tests/data) cut short and with bytes changed: `annotate_stream` (reader, decoder,
//! tracker) must come back with a capture or an error for each, never panic. Every input
//! is tried; a failure names each input that panicked, and where.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files of `dir` (relative to the crate), sorted, so that every run is the same.
fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// What a panic said, when `annotate_stream` panicked on `bytes`.
fn panics(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    let run = panic::catch_unwind(AssertUnwindSafe(|| {
        teardown::offline::annotate_stream(bytes, "fuzz", &mut out).is_ok()
    }));
    let payload = run.err()?;
    Some(
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(a panic without a message)".into()),
    )
}

/// Runs every `(label, input)` and fails naming each one that panicked.
fn all_return(inputs: impl IntoIterator<Item = (String, Vec<u8>)>) -> usize {
    let mut tried = 0;
    let mut failed = Vec::new();
    for (label, bytes) in inputs {
        tried += 1;
        if let Some(message) = panics(&bytes) {
            failed.push(format!("{label}: panicked: {message}"));
        }
    }
    assert!(
        failed.is_empty(),
        "annotate_stream panicked on {} of {tried} inputs:\n{}",
        failed.len(),
        failed.join("\n")
    );
    tried
}

#[test]
fn fuzz_found_inputs_return_without_panicking() {
    let inputs: Vec<(String, Vec<u8>)> = files("tests/fuzz")
        .iter()
        .map(|path| {
            (
                format!("tests/fuzz/{}", name(path)),
                std::fs::read(path).unwrap(),
            )
        })
        .collect();
    assert!(!inputs.is_empty(), "tests/fuzz holds no inputs");
    all_return(inputs);
}

/// The fixture captures (tests/data, copies of real runs: `teardown run` rewrites captures/),
/// whole: the mutations below start from files that annotate.
fn captures() -> Vec<(String, Vec<u8>)> {
    let captures: Vec<(String, Vec<u8>)> = files("tests/data")
        .iter()
        .filter(|path| path.extension().is_some_and(|e| e == "pcapng"))
        .map(|path| (name(path), std::fs::read(path).unwrap()))
        .collect();
    assert!(!captures.is_empty(), "no tests/data/*.pcapng");
    for (name, bytes) in &captures {
        let mut out = Vec::new();
        let done = teardown::offline::annotate_stream(&bytes[..], name, &mut out);
        assert!(done.is_ok(), "{name}: {done:?}");
    }
    captures
}

/// The offsets and lengths of a pcapng's blocks (little-endian, as the committed ones are).
fn blocks(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(len) = bytes.get(at + 4..at + 8) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len < 12 || at + len > bytes.len() {
            break;
        }
        found.push((at, len));
        at += len;
    }
    found
}

#[test]
fn captures_cut_short_return_without_panicking() {
    let mut inputs = Vec::new();
    for (name, bytes) in captures() {
        // Every length through the section header and the interface description, then
        // every 7th byte, then at each block's edges (a block cut right before and right
        // after its trailing length).
        let mut cuts: Vec<usize> = (0..=100).chain((101..bytes.len()).step_by(7)).collect();
        for (at, len) in blocks(&bytes) {
            for edge in [at + 1, at + 8, at + 27, at + 28, at + len - 4, at + len - 1] {
                cuts.push(edge);
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts.into_iter().filter(|&c| c < bytes.len()) {
            inputs.push((format!("{name} cut at {cut} bytes"), bytes[..cut].to_vec()));
        }
    }
    let tried = all_return(inputs);
    assert!(tried > 500, "only {tried} cuts");
}

#[test]
fn captures_with_bytes_changed_return_without_panicking() {
    let mut inputs = Vec::new();
    let mut changed = |name: &str, bytes: &[u8], at: usize, to: &[u8], what: &str| {
        if at + to.len() <= bytes.len() {
            let mut copy = bytes.to_vec();
            copy[at..at + to.len()].copy_from_slice(to);
            inputs.push((format!("{name} with {what} at byte {at}"), copy));
        }
    };
    for (name, bytes) in captures() {
        // Each byte of the headers, inverted; then every 5th byte with one bit set, every
        // 11th with its top bit flipped and every 13th zeroed.
        for at in 0..bytes.len() {
            let b = bytes[at];
            if at < 100 {
                changed(&name, &bytes, at, &[!b], "the byte inverted");
            }
            if at % 5 == 0 {
                changed(&name, &bytes, at, &[b ^ 0x01], "bit 0 flipped");
            }
            if at % 11 == 0 {
                changed(&name, &bytes, at, &[b ^ 0x80], "bit 7 flipped");
            }
            if at % 13 == 0 {
                changed(&name, &bytes, at, &[0], "a zero");
            }
        }
        // Each block's type and its two lengths, and the words where a packet block keeps
        // its interface, captured and original length (an interface description, its link
        // type and snaplen), set to the values that break readers.
        for (at, len) in blocks(&bytes) {
            let fields = [
                (at, "the block type"),
                (at + 4, "the block length"),
                (at + len - 4, "the trailing block length"),
                (at + 8, "word 2"),
                (at + 12, "word 3"),
                (at + 20, "word 5"),
                (at + 24, "word 6"),
            ];
            for (field, what) in fields.into_iter().filter(|(f, _)| f + 4 <= at + len) {
                let word = u32::from_le_bytes(bytes[field..field + 4].try_into().unwrap());
                for value in [
                    0,
                    1,
                    3,
                    6,
                    11,
                    12,
                    word.wrapping_add(4),
                    word.wrapping_sub(4),
                    word.wrapping_add(1),
                    0x7fff_ffff,
                    0x8000_0000,
                    u32::MAX,
                    u32::MAX - 3,
                ] {
                    let what = format!("{what} set to {value:#x}");
                    changed(&name, &bytes, field, &value.to_le_bytes(), &what);
                }
            }
        }
    }
    let tried = all_return(inputs);
    assert!(tried > 1000, "only {tried} changed captures");
}
