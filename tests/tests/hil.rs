//! Hardware in the loop over real pseudo-terminals: each driver talks through the kernel's serial
//! layer to the simulated firmware (or vendor device) served by the firmware-sim host, and all
//! devices share one world. Fault injection checks that every fault ends in recovery or a typed
//! error within the retry budget.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::float_cmp
)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qkd_units::pattern::{PatternKey, SlotPattern};

use qkd_drivers::serial::{
    BoardDetectors, BoardPolarizationController, BoardSource, DetectorNominals, DeviceConfig,
    DeviceKind, Mpc320, OzEpc, RetryPolicy, SerialLink,
};
use qkd_drivers::{
    ErrorKind, IntensityClass, PolarizationController, SinglePhotonDetectors, WcpSettings,
    WcpSource,
};
use qkd_firmware_sim::host::{Host, LightPath};
use qkd_firmware_sim::world::LinkPreset;
use qkd_protocol::{apt, squeezer_dac};
use qkd_units::{Hertz, MeanPhotonNumber, Picoseconds, Probability};

/// A fresh directory for one test's device links.
fn link_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qkd-hil-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The bench: 10 km SNSPD link with the chosen controller in the light path.
fn serve(test: &str, light_path: LightPath) -> (Host, PathBuf) {
    let dir = link_dir(test);
    let host = Host::serve(&dir, &LinkPreset::Snspd.spec(10.0), 7, light_path).unwrap();
    (host, dir)
}

/// A device's configuration as the tests use it: the kind's timeout, and more retries than the
/// default so that a test machine busy with other tests (two cores, many threads) loses no test
/// to a starved serving thread on top of the faults a test injects.
fn config(dir: &Path, name: &str, kind: DeviceKind) -> DeviceConfig {
    let mut config = DeviceConfig::new(kind, dir.join(name));
    config.retries = Some(8);
    config
}

fn link(dir: &Path, name: &str, kind: DeviceKind) -> (SerialLink, RetryPolicy) {
    let (port, policy) = config(dir, name, kind).resolve().unwrap();
    (SerialLink::new(port), policy)
}

async fn polarization_board(dir: &Path) -> BoardPolarizationController {
    let (link, policy) = link(dir, "epc", DeviceKind::PolarizationBoard);
    BoardPolarizationController::connect(link, policy, Some(4000.0))
        .await
        .unwrap()
}

async fn detector_board(dir: &Path) -> BoardDetectors {
    // The emulator computes every photon of a count: give it time beyond the integration.
    let mut config = config(dir, "detectors", DeviceKind::DetectorBoard);
    config.timeout_ms = Some(5_000);
    let (port, policy) = config.resolve().unwrap();
    let link = SerialLink::new(port);
    let nominals = DetectorNominals {
        efficiency: Probability::new(0.85).unwrap(),
        dark_rate: Hertz::new(100.0).unwrap(),
        dead_time: Picoseconds(50_000),
    };
    BoardDetectors::connect(link, policy, nominals)
        .await
        .unwrap()
}

/// The voltages the world's squeezers were last told to take.
fn world_volts(host: &Host) -> Vec<f64> {
    host.bench()
        .lock()
        .world()
        .unwrap()
        .node()
        .receiver
        .target_setting()
        .to_vec()
}

#[tokio::test]
async fn the_polarization_board_sets_the_worlds_squeezers() {
    let (host, dir) = serve("epc", LightPath::Epc);
    let mut epc = polarization_board(&dir).await;
    assert_eq!(epc.identity().model, "Polarization board");
    // Power-on drives 0 V.
    assert_eq!(epc.get().await.unwrap(), [0.0; 4]);
    let target = [1234.5, -4999.0, 0.0, 2500.0];
    epc.set(&target).await.unwrap();
    let read = epc.get().await.unwrap();
    for ((&t, r), v) in target.iter().zip(&read).zip(world_volts(&host)) {
        // The read-back is within half a DAC step of the target.
        assert!(
            (t - r).abs() <= squeezer_dac::MV_PER_STEP / 2.0,
            "{t} vs {r}"
        );
        assert!((r / 1000.0 - v).abs() < 1e-12, "world {v} V vs read {r} mV");
    }
    let refused = epc.set(&[0.0, 0.0, 0.0, 5001.0]).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Abort);
}

#[tokio::test]
async fn the_detector_board_counts_the_world_behind_the_squeezers_the_board_set() {
    let (host, dir) = serve("shared-world", LightPath::Epc);
    let mut epc = polarization_board(&dir).await;
    let mut detectors = detector_board(&dir).await;
    for channel in 0..4 {
        detectors.set_enabled(channel, true).await.unwrap();
    }
    for volts in [[0.0, 0.0, 0.0, 0.0], [2.0, -1.0, 0.5, 0.0]] {
        let millivolts = volts.map(|v| v * 1000.0);
        epc.set(&millivolts).await.unwrap();
        let before = host.bench().lock().clicks();
        let counts = detectors.counts(Duration::from_millis(200)).await.unwrap();
        let bench = host.bench().lock();
        // The board's counters are the world's clicks over the integration…
        let world: Vec<u64> = bench
            .clicks()
            .iter()
            .zip(before)
            .map(|(x, y)| x - y)
            .collect();
        assert_eq!(counts, world);
        assert!(counts.iter().all(|&c| c > 1000), "{counts:?}");
        // …seen through the squeezers at the voltages the polarization board latched (the
        // 100 µs settle time has long passed after 200 ms).
        let applied = bench
            .world()
            .unwrap()
            .node()
            .receiver
            .controller()
            .setting()
            .to_vec();
        for (a, v) in applied.iter().zip(volts) {
            assert!(
                (a - v).abs() <= squeezer_dac::MV_PER_STEP / 2000.0,
                "{applied:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_source_board_configures_the_worlds_source() {
    let (host, dir) = serve("source", LightPath::Epc);
    let (link, policy) = link(&dir, "source", DeviceKind::SourceBoard);
    let class = |mu, p| IntensityClass {
        mean_photon_number: MeanPhotonNumber::new(mu).unwrap(),
        probability: Probability::new(p).unwrap(),
    };
    let settings = WcpSettings {
        intensities: vec![class(0.45, 0.75), class(0.1, 0.2), class(0.0, 0.05)],
        basis_z_probability: Probability::new(0.8).unwrap(),
        reference_share: Probability::new(0.1).unwrap(),
    };
    let rate = Hertz::new(1e9).unwrap();
    let mut source = BoardSource::connect(link, policy, rate).await.unwrap();
    // A board fresh from power-on has no classes loaded yet.
    assert!(source.settings().intensities.is_empty());
    source.configure(&settings).await.unwrap();
    assert_eq!(source.settings(), &settings);
    {
        let bench = host.bench().lock();
        let world = bench.world().unwrap().source();
        assert_eq!(world.mean_photon_numbers, [0.45, 0.1, 0.0]);
        assert_eq!(world.probabilities, [0.75, 0.2, 0.05]);
        assert_eq!(world.basis_z_probability, 0.8);
        assert_eq!(world.reference_share, 0.1);
    }
    // A node's pattern key, through the board to the world's source: from the slot it starts at,
    // the world's choices are the ones the node computes from the key.
    let key = PatternKey::from_bytes(std::array::from_fn(|i| (31 * i + 5) as u8));
    source.start_pattern(&key).await.unwrap();
    {
        let bench = host.bench().lock();
        let world = bench.world().unwrap();
        let start = world.source().latest_pattern_start();
        assert!(start > 0 && start % world.source().sync_divider == 0);
        let node = SlotPattern::keyed(&key, settings.pattern_shares());
        for slot in [0, 1, 17, 1_000_003] {
            assert_eq!(
                world.slot_choice(start + slot),
                node.choice(slot),
                "slot {slot}"
            );
        }
    }
    source.set_enabled(true).await.unwrap();
    // Mean power: Σ p·μ × rate × hν (1550 nm), read through a 16-bit ADC of 10 nW full scale.
    let world_rate = host
        .bench()
        .lock()
        .world()
        .unwrap()
        .source()
        .clock
        .rate_hz() as f64;
    let expected_fw = (0.75 * 0.45 + 0.2 * 0.1) * world_rate * 1.2816e-19 * 1e15;
    let read = f64::from(source.monitor_power_fw().await.unwrap());
    assert!(
        (read - expected_fw).abs() <= 1e7 / 65535.0,
        "{read} fW vs {expected_fw}"
    );
    source.set_enabled(false).await.unwrap();
    assert_eq!(source.monitor_power_fw().await.unwrap(), 0);
    assert!(!host.bench().lock().world().unwrap().source_enabled());
}

/// Opens a served device by hand, as a terminal program would. Reads return as soon as the
/// reply is there; the timeout only bounds a reply that never comes, so it is far beyond the
/// slowest one (an MPC320 move of 85° takes 425 ms) on a machine whose serving thread may be
/// starved for a while.
fn raw_port(dir: &Path, name: &str, baud: u32) -> serialport::TTYPort {
    serialport::new(dir.join(name).to_string_lossy(), baud)
        .timeout(Duration::from_secs(10))
        .open_native()
        .unwrap()
}

fn read_exactly(port: &mut serialport::TTYPort, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    port.read_exact(&mut out).unwrap();
    out
}

fn read_until(port: &mut serialport::TTYPort, end: &[u8]) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(end) {
        port.read_exact(&mut byte).unwrap();
        out.push(byte[0]);
    }
    String::from_utf8(out).unwrap()
}

/// Writes an APT request and checks the reply's header; returns the reply's data packet.
fn apt_ask(
    port: &mut serialport::TTYPort,
    request: &[u8],
    header: [u8; 6],
    data: usize,
) -> Vec<u8> {
    port.write_all(request).unwrap();
    assert_eq!(
        read_exactly(port, 6),
        header,
        "reply header to {request:02X?}"
    );
    read_exactly(port, data)
}

#[test]
fn the_emulated_mpc320_answers_documented_frames() {
    let (host, dir) = serve("mpc320-frames", LightPath::Mpc320);
    let mut port = raw_port(&dir, "mpc320", 115_200);
    // HW_DISCONNECT as documented, then identify and enable paddle 2: none is answered.
    port.write_all(&[0x02, 0x00, 0x00, 0x00, 0x50, 0x01])
        .unwrap();
    port.write_all(&[0x23, 0x02, 0x00, 0x00, 0x50, 0x01])
        .unwrap();
    port.write_all(&[0x10, 0x02, 0x02, 0x01, 0x50, 0x01])
        .unwrap();
    // HW_REQ_INFO → HW_GET_INFO: 84 data bytes, to the host (0x01 | 0x80) from the device.
    let info = apt_ask(
        &mut port,
        &[0x05, 0, 0, 0, 0x50, 0x01],
        [0x06, 0, 0x54, 0, 0x81, 0x50],
        84,
    );
    let info = apt::HardwareInfo::decode(&info).unwrap();
    assert_eq!((apt::text(&info.model), info.channels), ("MPC320", 3));
    // MOVE_ABSOLUTE of paddle 2 to step 685 (85°) → MOVE_COMPLETED with the 14-byte status:
    // channel 2, position and encoder count 685, status bits "enabled".
    let moved = [
        0x53, 0x04, 0x06, 0x00, 0xD0, 0x01, 0x02, 0x00, 0xAD, 0x02, 0x00, 0x00,
    ];
    let status = apt_ask(&mut port, &moved, [0x64, 0x04, 0x0E, 0, 0x81, 0x50], 14);
    assert_eq!(status, [2, 0, 0xAD, 2, 0, 0, 0xAD, 2, 0, 0, 0, 0, 0, 0x80]);
    let paddles = world_volts(&host);
    assert!(
        (paddles[1] - 85f64.to_radians()).abs() < 1e-12,
        "{paddles:?}"
    );
    // POL_REQ_PARAMS → POL_GET_PARAMS: unused, velocity 100 %, home 0, jog steps 10.
    let params = apt_ask(
        &mut port,
        &[0x31, 0x05, 0, 0, 0x50, 0x01],
        [0x32, 0x05, 0x0C, 0, 0x81, 0x50],
        12,
    );
    assert_eq!(params, [0, 0, 100, 0, 0, 0, 10, 0, 10, 0, 10, 0]);
    // MOVE_HOME of paddle 2 → MOVE_HOMED for channel 2 (header only).
    apt_ask(
        &mut port,
        &[0x43, 0x04, 0x02, 0, 0x50, 0x01],
        [0x44, 0x04, 0x02, 0, 0x01, 0x50],
        0,
    );
    // A move of a disabled paddle is refused with a rich response naming MOVE_ABSOLUTE.
    let refused = [
        0x53, 0x04, 0x06, 0x00, 0xD0, 0x01, 0x01, 0x00, 0x0A, 0x00, 0x00, 0x00,
    ];
    let response = apt_ask(&mut port, &refused, [0x81, 0, 0x44, 0, 0x81, 0x50], 68);
    assert_eq!(response[..4], [0x53, 0x04, 0x02, 0x00]);
}

#[test]
fn the_emulated_oz_epc_answers_documented_lines() {
    let (host, dir) = serve("oz-lines", LightPath::OzEpc);
    let mut port = raw_port(&dir, "oz-epc", 9_600);
    let mut ask = |command: &str, end: &[u8]| {
        port.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        read_until(&mut port, end)
    };
    let done: &[u8] = b"Done\r\n";
    assert_eq!(
        ask("V?", done),
        "Voltage(mV): CH1 +0 CH2 +0 CH3 +0 CH4 +0\r\nDone\r\n"
    );
    assert_eq!(ask("V1,2200", done), "CH1 +2200\r\nDone\r\n");
    assert_eq!(ask("VH2", done), "CH2 +5000\r\nDone\r\n");
    assert_eq!(ask("VL3", done), "CH3 -5000\r\nDone\r\n");
    assert_eq!(ask("V4,-1000", done), "CH4 -1000\r\nDone\r\n");
    assert_eq!(
        ask("V?", done),
        "Voltage(mV): CH1 +2200 CH2 +5000 CH3 -5000 CH4 -1000\r\nDone\r\n"
    );
    assert_eq!(world_volts(&host), [2.2, 5.0, -5.0, -1.0]);
    assert!(ask("V1,5001", b"Error!\r\n").ends_with("Error!\r\n"));
    assert!(ask("V5,0", b"Error!\r\n").ends_with("Error!\r\n"));
    assert!(ask("F1,101", b"Error!\r\n").ends_with("Error!\r\n"));
    assert_eq!(ask("F1,50", done), "CH1 50 Hz\r\nDone\r\n");
    assert_eq!(ask("M?", done), "Work Mode: DC\r\nDone\r\n");
    assert_eq!(ask("MAC", done), "Work Mode: AC\r\nDone\r\n");
    assert_eq!(ask("WF2", done), "Waveform: Triangle\r\nDone\r\n");
    assert_eq!(ask("MDC", done), "Work Mode: DC\r\nDone\r\n");
    // Back in DC mode the squeezers hold the set voltages again.
    assert_eq!(world_volts(&host), [2.2, 5.0, -5.0, -1.0]);
}

#[tokio::test]
async fn vendor_drivers_move_the_worlds_controllers() {
    let (host, dir) = serve("vendor-drivers", LightPath::Mpc320);
    let (link_m, policy_m) = link(&dir, "mpc320", DeviceKind::Mpc320);
    let mut mpc = Mpc320::connect(link_m, policy_m, 100).await.unwrap();
    assert_eq!(mpc.identity().model, "MPC320");
    mpc.set(&[10.0, 20.0, 5.0]).await.unwrap();
    let read = mpc.get().await.unwrap();
    let world = world_volts(&host);
    for ((want, got), radians) in [10.0, 20.0, 5.0].iter().zip(&read).zip(world) {
        // One encoder step is 170/1370 = 0.124°.
        assert!((want - got).abs() <= 0.063, "{want} vs {got}");
        assert!((got.to_radians() - radians).abs() < 1e-12);
    }
    assert_eq!(
        mpc.set(&[0.0, 171.0, 0.0]).await.unwrap_err().kind(),
        ErrorKind::Abort
    );

    let (link_o, policy_o) = link(&dir, "oz-epc", DeviceKind::OzEpc);
    let mut oz = OzEpc::connect(link_o, policy_o, Some(4000.0), "EPC-1")
        .await
        .unwrap();
    oz.set(&[-2500.0, 0.0, 4999.0, 17.0]).await.unwrap();
    assert_eq!(oz.get().await.unwrap(), [-2500.0, 0.0, 4999.0, 17.0]);
}

/// Runs `f`, failing the test if it hangs beyond the policy's worst case.
async fn bounded<T>(policy: RetryPolicy, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(policy.worst_case(Duration::from_secs(1)), f)
        .await
        .expect("a serial operation outlived its retry budget")
}

#[tokio::test]
async fn board_faults_end_in_recovery() {
    let (host, dir) = serve("board-faults", LightPath::Epc);
    let device = host.device("epc").unwrap().clone();
    let mut epc = polarization_board(&dir).await;
    let (_, policy) = link(&dir, "epc", DeviceKind::PolarizationBoard);
    let mut step = 0.0;
    let mut check = async |epc: &mut BoardPolarizationController, what: &str| {
        step += 100.0;
        let target = [step, -step, step / 2.0, 0.0];
        bounded(policy, epc.set(&target))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let read = bounded(policy, epc.get()).await.unwrap();
        for (t, r) in target.iter().zip(&read) {
            assert!(
                (t - r).abs() <= squeezer_dac::MV_PER_STEP / 2.0,
                "{what}: {target:?} read back {read:?}"
            );
        }
        for (r, v) in read.iter().zip(world_volts(&host)) {
            assert!(
                (r / 1000.0 - v).abs() < 1e-12,
                "{what}: the world disagrees"
            );
        }
    };
    check(&mut epc, "clean").await;
    device.corrupt_replies(2);
    check(&mut epc, "corrupted replies").await;
    device.drop_replies(2);
    check(&mut epc, "dropped replies").await;
    // Replies later than the 50 ms timeout arrive while the retry waits: they carry an old
    // sequence number and are ignored.
    device.delay_replies(2, Duration::from_millis(80));
    check(&mut epc, "late replies").await;
    device.reset_during_next_request();
    check(&mut epc, "reset during a command").await;
    assert_eq!(epc.client().restarts(), 1);
    // A reset between commands: the board refuses until identified; the driver re-identifies,
    // restores the last setting, then answers the read with it.
    let before = epc.get().await.unwrap();
    device.reset();
    assert_eq!(bounded(policy, epc.get()).await.unwrap(), before);
    assert_eq!(epc.client().restarts(), 2);
    // Unplug, and plug back in while the driver retries.
    let opens = epc.client().port_opens();
    device.unplug();
    let replug = device.clone();
    let plugger = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        replug.replug();
    });
    check(&mut epc, "unplug and replug").await;
    plugger.await.unwrap();
    assert!(epc.client().port_opens() > opens);
}

#[tokio::test]
async fn a_device_that_stays_away_gives_a_typed_error_in_bounded_time() {
    let (host, dir) = serve("gone", LightPath::Epc);
    let mut epc = polarization_board(&dir).await;
    let (_, policy) = link(&dir, "epc", DeviceKind::PolarizationBoard);
    host.device("epc").unwrap().unplug();
    let error = bounded(policy, epc.set(&[1.0; 4])).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Reconnect, "{error}");
    // A device that is plugged in but silent times out instead.
    host.device("epc").unwrap().replug();
    host.device("epc").unwrap().drop_replies(100);
    let error = bounded(policy, epc.set(&[2.0; 4])).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Retry, "{error}");
}

#[tokio::test]
async fn detector_settings_survive_a_board_reset() {
    let (host, dir) = serve("detector-reset", LightPath::Epc);
    let mut detectors = detector_board(&dir).await;
    detectors.set_enabled(0, true).await.unwrap();
    detectors.set_enabled(1, true).await.unwrap();
    host.device("detectors").unwrap().reset();
    // After power-on the arm pins are low; the driver must re-arm before counting.
    let counts = detectors.counts(Duration::from_millis(100)).await.unwrap();
    assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
    assert_eq!((counts[2], counts[3]), (0, 0), "{counts:?}");
}

#[tokio::test]
async fn vendor_faults_end_in_recovery() {
    let (host, dir) = serve("vendor-faults", LightPath::OzEpc);
    let (link_o, policy_o) = link(&dir, "oz-epc", DeviceKind::OzEpc);
    let mut oz = OzEpc::connect(link_o, policy_o, None, "EPC-1")
        .await
        .unwrap();
    let oz_device = host.device("oz-epc").unwrap();
    oz_device.corrupt_replies(2);
    bounded(policy_o, oz.set(&[100.0, 200.0, 300.0, 400.0]))
        .await
        .unwrap();
    oz_device.drop_replies(1);
    bounded(policy_o, oz.set(&[-100.0, 200.0, 300.0, 400.0]))
        .await
        .unwrap();
    assert_eq!(oz.get().await.unwrap(), [-100.0, 200.0, 300.0, 400.0]);
    assert_eq!(world_volts(&host), [-0.1, 0.2, 0.3, 0.4]);

    let (link_m, policy_m) = link(&dir, "mpc320", DeviceKind::Mpc320);
    let mut mpc = Mpc320::connect(link_m, policy_m, 100).await.unwrap();
    let mpc_device = host.device("mpc320").unwrap();
    // A lost MOVE_COMPLETED: the absolute move is sent again and completes.
    mpc_device.drop_replies(1);
    bounded(policy_m, mpc.set(&[30.0, 0.0, 0.0])).await.unwrap();
    mpc_device.corrupt_replies(1);
    bounded(policy_m, mpc.set(&[30.0, 40.0, 0.0]))
        .await
        .unwrap();
    let read = mpc.get().await.unwrap();
    assert!(
        (read[0] - 30.0).abs() <= 0.063 && (read[1] - 40.0).abs() <= 0.063,
        "{read:?}"
    );
    let started = Instant::now();
    mpc_device.unplug();
    let error = bounded(policy_m, mpc.get()).await.unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::Reconnect,
        "{error} after {:?}",
        started.elapsed()
    );
}

/// The receiver's polarization as the world has it: the QBER the controller and fiber add.
fn added_qber(bench: &qkd_drivers::emulator::EmulatedBench) -> f64 {
    bench.inspect(|world| {
        let qkd_drivers::emulator::World::PrepareMeasure(pm) = world else {
            panic!("a prepare-and-measure bench")
        };
        let node = pm.node();
        node.receiver
            .controller()
            .rotation()
            .after(&node.fiber.rotation())
            .bb84_error(1.0)
    })
}

/// The whole loop through the serial path: the tracker reads the emulated tagger through the
/// driver traits and moves the squeezers through a serial driver, the kernel's PTY layer and
/// the emulated device (`name`, of `kind`), all on one world drifting at 0.1 rad/√s from a
/// random rotation. Returns the added QBER at the start and its mean over 3 s of tracking.
async fn track_through(
    test: &str,
    light_path: LightPath,
    name: &str,
    kind: DeviceKind,
) -> (f64, f64) {
    use qkd_calibration::monitor::{ErrorMonitor, Feedback, TaggedMonitor};
    use qkd_calibration::tracker::Tracker;
    use qkd_drivers::emulator::EmulatedBench;
    use qkd_firmware_sim::host::SharedBench;
    use qkd_firmware_sim::world::InitialRotation;
    use qkd_postprocess::slots::SlotConfig;

    let mut spec = LinkPreset::Snspd.spec(25.0);
    spec.source.reference_share = 0.25;
    spec.fiber.drift_rad_per_sqrt_s = 0.1;
    spec.fiber.initial_rotation = InitialRotation::Random;
    spec.receiver.controller = light_path.controller();
    let bench = EmulatedBench::prepare_measure(&spec, 11).unwrap();
    let dir = link_dir(test);
    let shared = SharedBench::from_shared(bench.device_world().unwrap(), light_path);
    let _host = Host::serve_bench(&dir, shared, 11).unwrap();
    // The detector board holds the detectors disarmed from power-on: arm them through it.
    let mut detectors = detector_board(&dir).await;
    for channel in 0..4 {
        detectors.set_enabled(channel, true).await.unwrap();
    }
    let mut config = config(&dir, name, kind);
    config.period_mv = Some(4000.0);
    // Tracking is not a fault test: a generous timeout keeps a busy machine from failing it.
    config.timeout_ms = Some(1_000);
    let mut controller = config.open_polarization().await.unwrap();
    let slots = SlotConfig::standard(
        spec.source.rep_rate_hz as f64,
        u64::from(spec.source.sync_divider),
    );
    let batch = Duration::from_millis(2);
    let tagger = bench.tagger(0, batch).unwrap();
    let source = bench.wcp_source().unwrap();
    let mut monitor =
        TaggedMonitor::new(tagger, source, batch, slots, Feedback::References).unwrap();
    let mut tracker = Tracker::for_controller(&mut controller).await.unwrap();
    let before = added_qber(&bench);
    tracker.align(&mut controller, &mut monitor).await.unwrap();
    // A second of tracking settles the floor estimate, as `qkd bench tracking` does before
    // it scores.
    let aligned_at = monitor.elapsed();
    while monitor.elapsed() < aligned_at + Duration::from_secs(1) {
        tracker.sweep(&mut controller, &mut monitor).await.unwrap();
    }
    let scored_from = monitor.elapsed();
    let mut samples = Vec::new();
    while monitor.elapsed() < scored_from + Duration::from_secs(3) {
        tracker.sweep(&mut controller, &mut monitor).await.unwrap();
        samples.push(added_qber(&bench));
    }
    assert!(tracker.moves() > 100, "{} moves", tracker.moves());
    // The device's read-back is what the world's squeezers were told.
    let read = controller.get().await.unwrap();
    let world: Vec<f64> = bench.inspect(|w| match w {
        qkd_drivers::emulator::World::PrepareMeasure(pm) => {
            pm.node().receiver.target_setting().to_vec()
        }
        qkd_drivers::emulator::World::Entangled(_) => vec![],
    });
    for (r, v) in read.iter().zip(world) {
        assert!((r / 1000.0 - v).abs() < 1e-12, "read {r} mV, world {v} V");
    }
    (before, samples.iter().sum::<f64>() / samples.len() as f64)
}

/// From a random start (tens of per cent added), the loop through each serial squeezer
/// controller keeps what it adds under the 0.5 % mean.
#[tokio::test]
async fn the_tracker_holds_a_drifting_link_through_the_polarization_board_over_a_pty() {
    let (before, mean) = track_through(
        "track-board",
        LightPath::Epc,
        "epc",
        DeviceKind::PolarizationBoard,
    )
    .await;
    assert!(
        before > 0.02,
        "the random start was already aligned: {before}"
    );
    assert!(mean < 0.005, "mean added QBER {mean}");
}

#[tokio::test]
async fn the_tracker_holds_a_drifting_link_through_the_oz_epc_over_a_pty() {
    let (before, mean) =
        track_through("track-oz", LightPath::OzEpc, "oz-epc", DeviceKind::OzEpc).await;
    assert!(
        before > 0.02,
        "the random start was already aligned: {before}"
    );
    assert!(mean < 0.005, "mean added QBER {mean}");
}

#[tokio::test]
async fn detector_settings_are_range_checked_before_they_are_sent() {
    use qkd_units::Volts;
    let (_host, dir) = serve("detector-ranges", LightPath::Epc);
    let mut detectors = detector_board(&dir).await;
    // The bias DAC spans 80 V: 70 V is taken, 81 V refused by the driver, channel 4 too.
    detectors
        .set_bias(0, Volts::new(70.0).unwrap())
        .await
        .unwrap();
    let refused = detectors
        .set_bias(0, Volts::new(81.0).unwrap())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Abort);
    assert!(refused.to_string().contains("81 V"), "{refused}");
    assert!(detectors.set_enabled(4, true).await.is_err());
    let dead = detectors
        .set_dead_time(1, Picoseconds(25_500))
        .await
        .unwrap_err();
    assert!(dead.to_string().contains("whole nanoseconds"), "{dead}");
    detectors
        .set_dead_time(1, Picoseconds(25_000))
        .await
        .unwrap();
    assert_eq!(detectors.channels()[1].dead_time, Picoseconds(25_000));
}
