//! Arbitrary bytes as an upstream's response to the `who_csv` parser (see
//! `vigie_fuzz::sources::check_who_csv`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| vigie_fuzz::sources::check_who_csv(bytes));
