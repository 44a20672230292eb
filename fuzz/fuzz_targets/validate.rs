//! Arbitrary bytes into `SchemaRegistry::validate`, the JSON Schema path:
//! it never panics, an accepted envelope re-encodes to one accepted again,
//! and a schema with a Rust type takes its data (see
//! `vigie_fuzz::check_validate`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| vigie_fuzz::check_validate(bytes));
