//! `quichat-conns`: being written (see issue 4).

fn main() {
    eprintln!("quichat-conns: not written yet");
    std::process::exit(2);
}
