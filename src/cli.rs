//! Command line (wiring only).

pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
