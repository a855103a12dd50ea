//! An emulated OZ Optics EPC driver: four fiber squeezers over ±5 V, driven by ASCII commands.
//! In AC (scrambling) mode each channel follows a full-range waveform at its frequency, which
//! scrambles the polarization the receiver sees when this controller is in the light path.

use std::fmt::Write as _;
use std::time::Instant;

use qkd_protocol::epc::{
    CHANNELS, DONE, EOL, ERROR_SUFFIX, MAX_HZ, MAX_MV, MIN_MV, VOLTAGE_PREFIX,
};

use super::bench::{LightPath, SharedBench};
use super::device::SerialDevice;

/// Longest command line accepted; longer input is discarded up to the next line end.
const MAX_LINE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waveform {
    Sine,
    Triangle,
}

/// The emulated EPC driver.
#[derive(Debug)]
pub struct OzEpc {
    bench: SharedBench,
    line: Vec<u8>,
    overlong: bool,
    millivolts: [i32; CHANNELS],
    hertz: [u32; CHANNELS],
    ac: bool,
    waveform: Waveform,
    started: Instant,
}

impl OzEpc {
    /// The device on `bench`, in DC mode at 0 V.
    pub fn new(bench: &SharedBench) -> Self {
        let device = OzEpc {
            bench: bench.clone(),
            line: Vec::new(),
            overlong: false,
            millivolts: [0; CHANNELS],
            hertz: [0; CHANNELS],
            ac: false,
            waveform: Waveform::Sine,
            started: Instant::now(),
        };
        device.drive(&device.millivolts.map(f64::from));
        device
    }

    fn drive(&self, millivolts: &[f64; CHANNELS]) {
        let volts: Vec<f64> = millivolts.iter().map(|mv| mv / 1000.0).collect();
        // Every value is inside ±5 V, the squeezers' range.
        let _ = self.bench.set_controller(LightPath::OzEpc, &volts);
    }

    /// `prefix` and each channel's value, as the device lists them.
    fn per_channel(prefix: &str, values: &[impl std::fmt::Display]) -> String {
        let mut line = prefix.to_owned();
        for (n, value) in values.iter().enumerate() {
            let _ = write!(line, " CH{} {value}", n + 1);
        }
        line
    }

    fn waveform_line(&self) -> String {
        match self.waveform {
            Waveform::Sine => "Waveform: Sine".into(),
            Waveform::Triangle => "Waveform: Triangle".into(),
        }
    }

    fn channel(text: &str) -> Option<usize> {
        let ch: usize = text.trim().parse().ok()?;
        (1..=CHANNELS).contains(&ch).then(|| ch - 1)
    }

    /// One command line → the content line, or the error text.
    fn execute(&mut self, command: &str) -> Result<String, &'static str> {
        let command = command.trim();
        let upper = command.to_ascii_uppercase();
        let set_mv = |this: &mut Self, ch: usize, mv: i32| {
            this.millivolts[ch] = mv;
            if !this.ac {
                this.drive(&this.millivolts.map(f64::from));
            }
            format!("CH{} {mv:+}", ch + 1)
        };
        match upper.as_str() {
            "V?" => {
                let signed = self.millivolts.map(|mv| format!("{mv:+}"));
                return Ok(Self::per_channel(VOLTAGE_PREFIX, &signed));
            }
            "F?" => return Ok(Self::per_channel("Frequency(Hz):", &self.hertz)),
            "M?" => return Ok(format!("Work Mode: {}", if self.ac { "AC" } else { "DC" })),
            "MAC" => {
                self.ac = true;
                return Ok("Work Mode: AC".into());
            }
            "MDC" => {
                self.ac = false;
                self.drive(&self.millivolts.map(f64::from));
                return Ok("Work Mode: DC".into());
            }
            "WF?" => return Ok(self.waveform_line()),
            "WF1" => {
                self.waveform = Waveform::Sine;
                return Ok(self.waveform_line());
            }
            "WF2" => {
                self.waveform = Waveform::Triangle;
                return Ok(self.waveform_line());
            }
            "SAVE" => return Ok("Settings saved".into()),
            _ => {}
        }
        for (prefix, mv) in [("VH", MAX_MV), ("VL", MIN_MV), ("VZ", 0)] {
            if let Some(rest) = upper.strip_prefix(prefix) {
                let ch = Self::channel(rest).ok_or("Invalid channel ")?;
                return Ok(set_mv(self, ch, mv));
            }
        }
        if let Some(rest) = upper.strip_prefix('V') {
            let (ch, mv) = rest.split_once(',').ok_or("Invalid command ")?;
            let ch = Self::channel(ch).ok_or("Invalid channel ")?;
            let mv: i32 = mv.trim().parse().map_err(|_| "Invalid voltage ")?;
            if !(MIN_MV..=MAX_MV).contains(&mv) {
                return Err("Voltage out of range ");
            }
            return Ok(set_mv(self, ch, mv));
        }
        if let Some(rest) = upper.strip_prefix('F') {
            let (ch, hz) = rest.split_once(',').ok_or("Invalid command ")?;
            let ch = Self::channel(ch).ok_or("Invalid channel ")?;
            let hz: u32 = hz.trim().parse().map_err(|_| "Invalid frequency ")?;
            if hz > MAX_HZ {
                return Err("Frequency out of range ");
            }
            self.hertz[ch] = hz;
            return Ok(format!("CH{} {hz} Hz", ch + 1));
        }
        Err("Unknown command ")
    }
}

impl SerialDevice for OzEpc {
    fn receive(&mut self, bytes: &[u8], _: Instant, reply: &mut dyn FnMut(&[u8])) {
        for &byte in bytes {
            if byte != b'\r' && byte != b'\n' {
                if self.line.len() < MAX_LINE {
                    self.line.push(byte);
                } else {
                    self.overlong = true;
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            if std::mem::take(&mut self.overlong) {
                reply(format!("Command too long {ERROR_SUFFIX}{EOL}").as_bytes());
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let answer = match self.execute(&text) {
                Ok(content) => format!("{content}{EOL}{DONE}{EOL}"),
                Err(what) => format!("{what}{ERROR_SUFFIX}{EOL}"),
            };
            reply(answer.as_bytes());
        }
    }

    fn poll(&mut self, now: Instant, _: &mut dyn FnMut(&[u8])) {
        if !self.ac {
            return;
        }
        let t = now.duration_since(self.started).as_secs_f64();
        let drive = std::array::from_fn(|n| {
            let phase = (t * f64::from(self.hertz[n]) + n as f64 / 4.0).fract();
            let unit = match self.waveform {
                Waveform::Sine => (phase * std::f64::consts::TAU).sin(),
                Waveform::Triangle => 1.0 - 4.0 * (phase - 0.5).abs(),
            };
            unit * f64::from(MAX_MV)
        });
        self.drive(&drive);
    }

    fn reset(&mut self) {
        *self = OzEpc::new(&self.bench);
    }
}
