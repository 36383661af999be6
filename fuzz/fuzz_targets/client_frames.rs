//! Decodes arbitrary bytes as client↔edge frames (see `decode_check` for the property).
#![no_main]

mod decode_check;

use libfuzzer_sys::fuzz_target;
use protocol::{ClientFrame, ServerFrame};

fuzz_target!(|data: &[u8]| {
    decode_check::check::<ClientFrame>(data);
    decode_check::check::<ServerFrame>(data);
});
