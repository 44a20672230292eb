//! Every payload schema, field by field: the input's first byte picks a
//! valid envelope of `health.case`, `health.country_day`,
//! `health.outbreak_news` or `health.case_score`, its second byte a field
//! of the envelope or of the payload (or the whole `data`), and the rest
//! takes that field's place as raw JSON text (an empty rest drops the
//! field). The message then goes through the checks of the parse target
//! and of the validate target, so the fuzzer works on the values each
//! payload type and its schema must agree on, not on JSON syntax.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Some(message) = vigie_fuzz::payload_message(input) {
        vigie_fuzz::check_parse(&message);
        vigie_fuzz::check_validate(&message);
    }
});
