//! Integration tests: the built binary, run for real. Tests that need root skip with a
//! printed reason, or fail when TEARDOWN_REQUIRE_ROOT=1 (as CI sets it).

mod capture;
mod cli;
mod exec;
mod fuzz_regressions;
mod helper;
mod kernel;
mod offline;
mod pictures;
mod programs;
mod readme;
mod real;
mod run_errors;
mod scenarios;
mod scripts;
mod why;
