//! Decodes arbitrary bytes as edge↔core frames (see `decode_check` for the property),
//! and checks that an edge forwarding a core frame body reads it as decoding does.
#![no_main]

mod decode_check;

use libfuzzer_sys::fuzz_target;
use protocol::codec;
use protocol::forward::{CoreIn, read_core_frame};
use protocol::{CoreFrame, EdgeFrame, ServerFrame};

fuzz_target!(|data: &[u8]| {
    decode_check::check::<EdgeFrame>(data);
    decode_check::check::<CoreFrame>(data);
    forward_check(data);
});

/// `data` as a core frame body: forwarding must accept exactly what decoding accepts, and
/// a forwarded delivery must decode to the message decoding finds.
fn forward_check(body: &[u8]) {
    // A stream's decoder refuses a longer body before anything reads it.
    if body.len() > protocol::limits::FRAME_BYTES_MAX {
        return;
    }
    let mut prefixed = Vec::with_capacity(body.len() + 5);
    let mut len = body.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            prefixed.push(byte);
            break;
        }
        prefixed.push(byte | 0x80);
    }
    prefixed.extend_from_slice(body);
    match (read_core_frame(body), codec::decode_exact::<CoreFrame>(&prefixed)) {
        (Ok(CoreIn::Deliver(forward)), Ok(CoreFrame::Deliver { sessions, message })) => {
            assert_eq!(forward.sessions().collect::<Vec<_>>(), sessions);
            let client = codec::decode_exact::<ServerFrame>(forward.frame.as_bytes())
                .expect("a forwarded delivery decodes");
            assert_eq!(client, ServerFrame::Deliver(message));
        }
        (Ok(CoreIn::Frame(forwarded)), Ok(decoded)) => assert_eq!(forwarded, decoded),
        (Err(forwarded), Err(decoded)) => assert_eq!(forwarded, decoded),
        (forwarded, decoded) => panic!("forwarding read {forwarded:?}, decoding {decoded:?}"),
    }
}
