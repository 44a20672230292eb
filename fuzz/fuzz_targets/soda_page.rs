//! Arbitrary bytes as an upstream's response to the `soda_page` parser (see
//! `vigie_fuzz::sources::check_soda_page`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| vigie_fuzz::sources::check_soda_page(bytes));
