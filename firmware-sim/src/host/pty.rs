//! Serves a device on a pseudo-terminal: the device's side is the PTY master, the client opens
//! the slave through a symlink, exactly as it would open `/dev/ttyUSB0`. A fault plan lets tests
//! damage, drop or delay replies, pull the cable (the PTY disappears and a new one replaces it)
//! and power-cycle the device.

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};

use super::HostError;
use super::device::SerialDevice;

/// How long the serving loop waits for input before it polls the device again.
const POLL: Duration = Duration::from_millis(2);

/// Faults to inject into the next replies.
#[derive(Debug, Default, Clone)]
struct Faults {
    corrupt: u32,
    drop: u32,
    delay: u32,
    delay_by: Duration,
    reset_on_request: bool,
}

#[derive(Debug)]
struct ControlState {
    faults: Faults,
    plugged: bool,
    reset: bool,
    stop: bool,
    slave: Option<String>,
}

/// Remote control of a served device, for tests and the operator.
#[derive(Debug, Clone)]
pub struct DeviceHandle {
    name: String,
    link: PathBuf,
    state: Arc<Mutex<ControlState>>,
}

impl DeviceHandle {
    fn state(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The device's name (`source`, `mpc320`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The symlink clients open.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The pseudo-terminal the link points to now (`None` while unplugged).
    pub fn pty(&self) -> Option<String> {
        self.state().slave.clone()
    }

    /// Flips a bit in each of the next `n` replies.
    pub fn corrupt_replies(&self, n: u32) {
        self.state().faults.corrupt = n;
    }

    /// Swallows the next `n` replies.
    pub fn drop_replies(&self, n: u32) {
        self.state().faults.drop = n;
    }

    /// Sends each of the next `n` replies `by` late.
    pub fn delay_replies(&self, n: u32, by: Duration) {
        let mut state = self.state();
        state.faults.delay = n;
        state.faults.delay_by = by;
    }

    /// Power-cycles the device when the next bytes arrive, before it answers them.
    pub fn reset_during_next_request(&self) {
        self.state().faults.reset_on_request = true;
    }

    /// Power-cycles the device now; returns once it has restarted.
    pub fn reset(&self) {
        self.state().reset = true;
        self.wait_until(|state| !state.reset);
    }

    /// Pulls the cable: returns once the PTY is closed and the link gone.
    pub fn unplug(&self) {
        self.state().plugged = false;
        self.wait_until(|state| state.slave.is_none());
    }

    /// Plugs it back in: returns once a new PTY is behind the same link.
    pub fn replug(&self) {
        self.state().plugged = true;
        self.wait_until(|state| state.slave.is_some());
    }

    /// Waits for the serving thread to carry out a request (a second at most, should the
    /// thread be gone), so that tests act on a device in the state they asked for.
    fn wait_until(&self, done: impl Fn(&ControlState) -> bool) {
        let asked = std::time::Instant::now();
        while !done(&self.state()) && asked.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn stop(&self) {
        self.state().stop = true;
    }
}

/// A device being served, stopped when dropped.
#[derive(Debug)]
pub struct ServedDevice {
    handle: DeviceHandle,
    thread: Option<JoinHandle<()>>,
}

impl ServedDevice {
    /// Starts serving `device` on a new PTY linked from `dir/name`.
    pub fn start(
        dir: &Path,
        name: &str,
        device: Box<dyn SerialDevice>,
    ) -> Result<ServedDevice, HostError> {
        let handle = DeviceHandle {
            name: name.to_owned(),
            link: dir.join(name),
            state: Arc::new(Mutex::new(ControlState {
                faults: Faults::default(),
                plugged: true,
                reset: false,
                stop: false,
                slave: None,
            })),
        };
        let pty = Pty::open(&handle.link)?;
        handle.state().slave = Some(pty.slave_name.clone());
        let serving = handle.clone();
        let thread = std::thread::Builder::new()
            .name(format!("serve {name}"))
            .spawn(move || serve(&serving, device, Some(pty)))
            .map_err(|e| HostError::Thread(e.to_string()))?;
        Ok(ServedDevice {
            handle,
            thread: Some(thread),
        })
    }

    /// Its remote control.
    pub fn handle(&self) -> &DeviceHandle {
        &self.handle
    }
}

impl Drop for ServedDevice {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.handle.link);
    }
}

/// One PTY pair: the master the device talks through, and the slave kept open so the master
/// never sees a hang-up while no client is connected.
struct Pty {
    master: TTYPort,
    _slave: TTYPort,
    slave_name: String,
}

impl Pty {
    fn open(link: &Path) -> Result<Pty, HostError> {
        let (mut master, slave) = TTYPort::pair().map_err(|e| HostError::Pty(e.to_string()))?;
        master
            .set_timeout(POLL)
            .map_err(|e| HostError::Pty(e.to_string()))?;
        let slave_name = slave
            .name()
            .ok_or_else(|| HostError::Pty("the new PTY has no name".into()))?;
        // Replace the link atomically, so a client never sees it missing during a replug.
        let staging = link.with_extension("new");
        let _ = std::fs::remove_file(&staging);
        std::os::unix::fs::symlink(&slave_name, &staging).map_err(|e| HostError::Link {
            path: staging.clone(),
            error: e.to_string(),
        })?;
        std::fs::rename(&staging, link).map_err(|e| HostError::Link {
            path: link.to_owned(),
            error: e.to_string(),
        })?;
        Ok(Pty {
            master,
            _slave: slave,
            slave_name,
        })
    }
}

/// Replies waiting for their (delayed) time.
type Outbox = Vec<(Instant, Vec<u8>)>;

fn serve(handle: &DeviceHandle, mut device: Box<dyn SerialDevice>, mut pty: Option<Pty>) {
    let mut outbox: Outbox = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        let (plugged, reset, stop) = {
            let state = handle.state();
            (state.plugged, state.reset, state.stop)
        };
        if stop {
            return;
        }
        if reset {
            device.reset();
            outbox.clear();
            handle.state().reset = false;
        }
        match (&mut pty, plugged) {
            (Some(_), false) => {
                pty = None;
                outbox.clear();
                let _ = std::fs::remove_file(&handle.link);
                handle.state().slave = None;
            }
            (None, true) => match Pty::open(&handle.link) {
                Ok(new) => {
                    handle.state().slave = Some(new.slave_name.clone());
                    pty = Some(new);
                }
                Err(e) => {
                    tracing::warn!(device = handle.name(), error = %e, "cannot recreate the PTY; retrying");
                    std::thread::sleep(POLL);
                }
            },
            _ => {}
        }
        let Some(port) = pty.as_mut() else {
            std::thread::sleep(POLL);
            continue;
        };
        let now = Instant::now();
        let mut replies: Vec<Vec<u8>> = Vec::new();
        match port.master.read(&mut buffer) {
            Ok(n) if n > 0 => {
                let reset_first = std::mem::take(&mut handle.state().faults.reset_on_request);
                if reset_first {
                    device.reset();
                } else {
                    device.receive(&buffer[..n], now, &mut |r| replies.push(r.to_vec()));
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => std::thread::sleep(POLL),
        }
        device.poll(now, &mut |r| replies.push(r.to_vec()));
        for reply in replies {
            schedule(handle, reply, now, &mut outbox);
        }
        let due: Vec<Vec<u8>> = take_due(&mut outbox, Instant::now());
        for bytes in due {
            // A client that reads nothing lets the PTY's buffer fill; as in a UART overrun,
            // what does not fit is lost (the client's retries recover).
            let _ = port.master.write_all(&bytes);
        }
    }
}

/// Applies the fault plan to one reply and queues it.
fn schedule(handle: &DeviceHandle, mut reply: Vec<u8>, now: Instant, outbox: &mut Outbox) {
    let mut state = handle.state();
    let faults = &mut state.faults;
    if faults.drop > 0 {
        faults.drop -= 1;
        return;
    }
    if faults.corrupt > 0 && !reply.is_empty() {
        faults.corrupt -= 1;
        let middle = reply.len() / 2;
        reply[middle] ^= 0x24;
    }
    let mut at = now;
    if faults.delay > 0 {
        faults.delay -= 1;
        at += faults.delay_by;
    }
    outbox.push((at, reply));
}

fn take_due(outbox: &mut Outbox, now: Instant) -> Vec<Vec<u8>> {
    let mut due = Vec::new();
    let mut i = 0;
    while i < outbox.len() {
        if outbox[i].0 <= now {
            due.push(outbox.remove(i).1);
        } else {
            i += 1;
        }
    }
    due
}
