//! `ferrite-cli` (being built; see the client/CLI issue).

fn main() {
    eprintln!("ferrite-cli: not built yet");
    std::process::exit(1);
}
