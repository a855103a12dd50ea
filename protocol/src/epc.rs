//! The OZ Optics EPC driver's ASCII protocol (9600 baud): commands end with CR LF; a reply is one
//! content line and then `Done`, or one line ending in `Error!` when the command fails.

/// Line terminator of commands and replies.
pub const EOL: &str = "\r\n";
/// The line that ends a successful reply.
pub const DONE: &str = "Done";
/// How a failing command's line ends.
pub const ERROR_SUFFIX: &str = "Error!";
/// How the error line for a line the device does not know as a command starts.
pub const UNKNOWN_COMMAND: &str = "Unknown command";
/// Channels (fiber squeezers).
pub const CHANNELS: usize = 4;
/// Drive range, mV.
pub const MIN_MV: i32 = -5000;
/// Drive range, mV.
pub const MAX_MV: i32 = 5000;
/// Scrambling frequency range, Hz.
pub const MAX_HZ: u32 = 100;
/// Prefix of the `V?` reply.
pub const VOLTAGE_PREFIX: &str = "Voltage(mV):";

/// Reads the channel voltages out of a `V?` content line such as
/// `Voltage(mV): CH1 +2200 CH2 +5000 CH3 -1000 CH4 -4000`.
pub fn parse_voltages(line: &str) -> Option<[i32; CHANNELS]> {
    let rest = line.trim().strip_prefix(VOLTAGE_PREFIX)?;
    let mut words = rest.split_whitespace();
    let mut out = [0i32; CHANNELS];
    for (n, slot) in out.iter_mut().enumerate() {
        let label = words.next()?;
        if label.strip_prefix("CH")?.parse::<usize>().ok()? != n + 1 {
            return None;
        }
        *slot = words.next()?.parse().ok()?;
    }
    words.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_voltage_line() {
        assert_eq!(
            parse_voltages("Voltage(mV): CH1 +2200 CH2 +5000 CH3 -1000 CH4 -4000"),
            Some([2200, 5000, -1000, -4000])
        );
        assert_eq!(
            parse_voltages("Voltage(mV): CH1 +2200 CH2 +5000 CH3 -1000"),
            None
        );
        assert_eq!(
            parse_voltages("Voltage(mV): CH1 +2200 CH3 +5000 CH2 -1000 CH4 0"),
            None
        );
        assert_eq!(parse_voltages("Work Mode: DC"), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(line in ".{0,80}") {
            let _ = parse_voltages(&line);
        }
    }
}
