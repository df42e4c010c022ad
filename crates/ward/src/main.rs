//! The `ward` binary: parses the command line and hands over to [`ward::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    ward::cli::main()
}
