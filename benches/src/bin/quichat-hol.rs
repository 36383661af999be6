//! `quichat-hol`: being written (see issue 4).

fn main() {
    eprintln!("quichat-hol: not written yet");
    std::process::exit(2);
}
