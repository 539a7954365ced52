//! Runs the doctor against the real environment: `cargo run -p keyward-doctor --example doctor -- --offline`.
use clap::Parser;

#[derive(Parser)]
enum Cmd {
    /// keyward doctor
    Doctor(keyward_doctor::DoctorArgs),
    /// keyward explain
    Explain(keyward_doctor::ExplainArgs),
}

fn main() {
    let mut out = std::io::stdout();
    let code = match Cmd::parse() {
        Cmd::Doctor(a) => {
            keyward_doctor::run_doctor(&a, &keyward_doctor::SystemEnvironment, &mut out)
        }
        Cmd::Explain(a) => keyward_doctor::run_explain(&a, &mut out),
    };
    std::process::exit(code);
}
