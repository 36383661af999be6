//! Decodes arbitrary bytes as edge↔core frames (see `decode_check` for the property).
#![no_main]

mod decode_check;

use libfuzzer_sys::fuzz_target;
use protocol::{CoreFrame, EdgeFrame};

fuzz_target!(|data: &[u8]| {
    decode_check::check::<EdgeFrame>(data);
    decode_check::check::<CoreFrame>(data);
});
