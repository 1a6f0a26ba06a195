fn main() -> std::process::ExitCode {
    seatwarden::cli::main()
}
