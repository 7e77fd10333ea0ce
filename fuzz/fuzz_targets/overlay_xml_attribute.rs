//! The xml-attribute overlay (`autoprov::render::overlay::apply` with `Format::XmlAttribute`): arbitrary
//! base text and overrides; invariants in `autoprov_fuzz::check_overlay`.
#![no_main]

use autoprov::model::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    autoprov_fuzz::check_overlay(Format::XmlAttribute, data);
});
