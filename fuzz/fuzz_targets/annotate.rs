#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    // Errors are fine (bad input gets an error); panics, hangs and huge allocations are not.
    let _ = teardown::offline::annotate_stream(data, "fuzz", &mut out);
});
