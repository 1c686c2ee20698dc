//! Arbitrary bytes, as UTF-8, through `UrlPolicy::normalize`, asserting the properties in
//! `kurz_create::validate::properties`: the same function the property tests call, so this
//! body is compiled and run by every `cargo test` even though this crate needs nightly.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kurz_create::validate::properties::fuzz_one(data);
});
