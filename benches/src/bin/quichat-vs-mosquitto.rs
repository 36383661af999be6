//! `quichat-vs-mosquitto`: being written (see issue 4).

fn main() {
    eprintln!("quichat-vs-mosquitto: not written yet");
    std::process::exit(2);
}
