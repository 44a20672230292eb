//! Arbitrary bytes as an upstream's response to the `don_html` parser (see
//! `vigie_fuzz::sources::check_don_html`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| vigie_fuzz::sources::check_don_html(bytes));
