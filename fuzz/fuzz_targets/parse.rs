//! Arbitrary bytes into `SchemaRegistry::parse`, the validation every
//! consumed record goes through: it never panics, agrees with `validate`,
//! and an accepted event re-encodes to bytes that parse to the same event
//! (see `vigie_fuzz::check_parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| vigie_fuzz::check_parse(bytes));
