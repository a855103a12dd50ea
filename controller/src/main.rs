//! `qkd`: the command-line face of a qkd-node.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use qkd_controller::{bench, calibrate, devices, emulate, kme, link, node, plan, sim, tags};

/// Controller of one node of a quantum key distribution link.
#[derive(Debug, Parser)]
#[command(name = "qkd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the emulated optical bench and report what an operator looks at first.
    Emulate(emulate::EmulateArgs),
    /// Run both nodes of a link against the emulator, through post-processing to keys.
    Link(link::LinkArgs),
    /// Calibrate the receiver on the emulated bench: delays, detectors, intensities, polarization.
    Calibrate(calibrate::CalibrateArgs),
    /// Expected key rate for given hardware and distance (asymptotic and finite-key).
    Plan(plan::PlanArgs),
    /// Work with recorded time tags.
    #[command(subcommand)]
    Tags(tags::TagsCommand),
    /// The serial devices of a configuration file.
    #[command(subcommand)]
    Devices(devices::DevicesCommand),
    /// The emulated devices on pseudo-terminals.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Measure throughput (JSON with --json).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run one node of a link (`--config FILE`) until SIGINT/SIGTERM, or ask one for its status.
    Node(node::NodeArgs),
    /// The keys in a node's store.
    #[command(subcommand)]
    Keys(node::KeysCommand),
    /// Provision the secrets two nodes authenticate with.
    #[command(subcommand)]
    Auth(node::AuthCommand),
    /// Demo certificates for the KMEs and SAEs of a link.
    #[command(subcommand)]
    Pki(kme::PkiCommand),
    /// A node's key delivery (ETSI GS QKD 014).
    #[command(subcommand)]
    Kme(kme::KmeCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Emulate(args) => emulate::run(&args),
        Command::Link(args) => link::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Calibrate(args) => calibrate::run(&args),
        Command::Bench(command) => bench::run(&command),
        Command::Tags(command) => tags::run(&command),
        Command::Sim(command) => sim::run(&command),
        Command::Devices(command) => devices::run(&command),
        Command::Node(args) => node::run(&args),
        Command::Keys(command) => node::keys(&command),
        Command::Auth(command) => node::auth(&command),
        Command::Pki(command) => kme::pki(&command),
        Command::Kme(command) => kme::run(&command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", message(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, as `{:#}` prints them, leaving out a cause whose
/// text its wrapper already shows (many errors print their source in their own message).
fn message(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::builder::ValueParser;

    #[test]
    fn an_os_error_shown_by_its_wrapper_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("calibration file /x: {0}")]
        struct Wrapper(#[source] std::io::Error);
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let err = anyhow::Error::new(Wrapper(io)).context("loading");
        assert_eq!(
            message(&err),
            format!("loading: calibration file /x: {text}")
        );
    }

    /// A negative number given to a numeric flag reaches the range check (which names the
    /// allowed range) instead of clap's "unexpected argument".
    #[test]
    fn every_numeric_flag_takes_negative_numbers() {
        fn visit(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let f64_parser = ValueParser::from(clap::value_parser!(f64)).type_id();
            for arg in command.get_arguments() {
                let numeric = arg.get_value_parser().type_id() == f64_parser;
                if numeric && !arg.is_allow_negative_numbers_set() {
                    missing.push(format!("{path} --{}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                visit(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        visit(&Cli::command(), "qkd", &mut missing);
        assert!(missing.is_empty(), "{missing:?}");
    }
}
