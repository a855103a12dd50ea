//! Calibration routines against the emulated bench, through the driver traits only: what they
//! measure is compared with what the emulator was built with.
// Configured values are compared exactly where they are copied, not computed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use std::time::Duration;

use qkd_calibration::delay::{DelayCalibrationSettings, calibrate_delays, calibrate_timing};
use qkd_calibration::detectors::{
    ChannelFigures, CharacterisationSettings, DetectorLimits, characterise_detectors,
};
use qkd_calibration::intensity::{IntensitySettings, calibrate_intensities};
use qkd_calibration::monitor::{ErrorMonitor, Feedback, TaggedMonitor};
use qkd_calibration::state::PolarizationCalibration;
use qkd_calibration::tracker::Tracker;
use qkd_drivers::emulator::{
    EmulatedBench, EmulatedPolarizationController, EmulatedTagger, EmulatedWcpSource,
};
use qkd_drivers::{PolarizationController, TagBatch, TimeTagger};
use qkd_firmware_sim::world::detector::{DarkCountSpec, DetectorSpec};
use qkd_firmware_sim::world::presets::LinkPreset;
use qkd_firmware_sim::world::{ControllerSpec, InitialRotation, LinkSpec};
use qkd_postprocess::slots::{Detections, SlotConfig, SlotRecovery};
use qkd_units::Hertz;
use qkd_units::Probability;

const BATCH: Duration = Duration::from_millis(10);

/// Cable delays of the tagger inputs: sync, then detectors H, V, D, A (ps).
const CABLES: [i64; 5] = [700, 1_900, -800, 3_100, 12_450];

/// Delay calibration of `spec`'s link over `duration`.
fn delay_settings(spec: &LinkSpec, duration: Duration) -> DelayCalibrationSettings {
    DelayCalibrationSettings {
        slot_rate: Hertz::new(spec.source.rep_rate_hz as f64).unwrap(),
        sync_divider: u64::from(spec.source.sync_divider),
        duration,
        batch: BATCH,
    }
}

/// Share of detections slot recovery keeps in its gate over `duration` with `config`.
async fn in_gate_share(
    tagger: &mut impl TimeTagger,
    config: SlotConfig,
    duration: Duration,
) -> f64 {
    let mut slots = SlotRecovery::new(config).unwrap();
    let (mut batch, mut detections) = (TagBatch::default(), Detections::default());
    for _ in 0..duration.as_millis() / BATCH.as_millis() {
        tagger.read(&mut batch).await.unwrap();
        slots.process(&batch.time_ps, &batch.channel, &mut detections);
    }
    let stats = slots.stats();
    stats.in_gate as f64 / (stats.in_gate + stats.outside_gate) as f64
}

#[tokio::test]
async fn delays_are_recovered_to_within_their_statistical_error_and_fix_the_gate() {
    let mut spec = LinkPreset::Snspd.spec(25.0);
    spec.tagger.channel_delays_ps[..5].copy_from_slice(&CABLES);
    let rate = spec.source.rep_rate_hz as f64;
    let divider = u64::from(spec.source.sync_divider);
    let bench = EmulatedBench::prepare_measure(&spec, 11).unwrap();
    let mut tagger = bench.tagger(0, BATCH).unwrap();
    let settings = delay_settings(&spec, Duration::from_millis(200));
    let found = calibrate_delays(&mut tagger, &settings).await.unwrap();
    let slot = 1e12 / rate;
    assert!(found.clock_error_ppm.abs() < 1.0, "{found:?}");
    assert_eq!(found.channels.len(), 4);
    for channel in &found.channels {
        let d = usize::from(channel.detector);
        let truth = (CABLES[1 + d] - CABLES[0]) as f64;
        let error = {
            let e = channel.delay_ps - truth;
            e - slot * (e / slot).round()
        };
        // The delay is the centre of the peak's clicks, each off by the detector and sync jitter
        // (FWHM → σ: /2.3548): its standard error is σ/√clicks. The calibration's own error bar
        // must agree (an inflated one would excuse anything), and the delay must be within five
        // of those, plus the tagger's bin (whole picoseconds here).
        let jitter_sigma = spec.receiver.detectors[d]
            .jitter_fwhm_ps
            .hypot(spec.tagger.sync_jitter_fwhm_ps)
            / 2.3548;
        let expected_error = jitter_sigma / channel.peak_counts.sqrt();
        assert!(
            (0.5..2.0).contains(&(channel.delay_error_ps / expected_error)),
            "detector {d}: error bar {} ps, the jitter gives {expected_error}",
            channel.delay_error_ps
        );
        assert!(
            error.abs() < 5.0 * expected_error + 1.0,
            "detector {d}: {channel:?} vs {truth}"
        );
        // Detector and sync jitter add in quadrature; the width is counted in whole histogram
        // bins (a thousandth of the slot), up to one bin too wide on each side.
        let jitter = spec.receiver.detectors[d]
            .jitter_fwhm_ps
            .hypot(spec.tagger.sync_jitter_fwhm_ps);
        let bin = slot / 1000.0;
        assert!(
            channel.fwhm_ps >= jitter - bin && channel.fwhm_ps <= jitter + 2.0 * bin,
            "{channel:?} vs {jitter}"
        );
    }

    // The found delays put the clicks back in the gate that the unknown cables pushed them out of.
    let mut config = SlotConfig::standard(rate, divider);
    let before = in_gate_share(&mut tagger, config.clone(), Duration::from_millis(100)).await;
    found.apply_to(&mut config);
    let after = in_gate_share(&mut tagger, config, Duration::from_millis(100)).await;
    // Every cable puts its detector more than half a gate (500 ps) and tens of jitter widths
    // away from the slot centre: only dark counts fall in the gate.
    assert!(before < 0.01, "uncalibrated share {before}");
    assert!(after > 0.99, "calibrated share {after}");
}

/// Characterises the detectors of a bench built from `spec` and `seed`, with `dark_seconds`
/// of dark counts and `seconds` with the source on.
async fn characterised(
    spec: &LinkSpec,
    seed: u64,
    dark_seconds: u64,
    seconds: f64,
) -> Vec<ChannelFigures> {
    let bench = EmulatedBench::prepare_measure(spec, seed).unwrap();
    let (detectors, mut source) = (bench.detectors(0).unwrap(), bench.wcp_source().unwrap());
    let mut tagger = bench.tagger(0, BATCH).unwrap();
    let settings = CharacterisationSettings {
        dark_integration: Duration::from_secs(dark_seconds),
        light_duration: Duration::from_secs_f64(seconds),
        batch: BATCH,
        gate_rate: Some(Hertz::new(spec.source.rep_rate_hz as f64).unwrap()),
        limits: DetectorLimits::default(),
    };
    characterise_detectors(&detectors, &mut source, &mut tagger, &settings)
        .await
        .unwrap()
}

fn dark_rate_of(spec: &DetectorSpec, rate: f64) -> f64 {
    match spec.dark {
        DarkCountSpec::FreeRunning { rate_hz } => rate_hz,
        DarkCountSpec::Gated {
            probability_per_gate,
            ..
        } => probability_per_gate * rate,
    }
}

#[tokio::test]
async fn dark_counts_and_an_efficiency_mismatch_are_measured_and_the_mismatch_flagged() {
    let mut spec = LinkPreset::Snspd.spec(25.0);
    // V loses a fifth of its efficiency: a mismatch inside the Z pair.
    spec.receiver.detectors[1].efficiency *= 0.8;
    let rate = spec.source.rep_rate_hz as f64;
    let (dark_seconds, light_seconds) = (5, 0.3);
    let figures = characterised(&spec, 5, dark_seconds, light_seconds).await;
    for f in &figures {
        let truth = dark_rate_of(&spec.receiver.detectors[f.detector], rate);
        // Poisson counts over the dark integration: five standard errors of the expected rate.
        let sigma = (truth / dark_seconds as f64).sqrt();
        assert_eq!(f.nominal_dark_rate_hz, Some(truth));
        assert!(
            (f.dark_rate_hz - truth).abs() < 5.0 * sigma,
            "{f:?} vs {truth}"
        );
    }
    // 2·0.8/1.8 and 2/1.8 of the pair's mean for V and H; D and A matched. The ratio
    // r = 2x/(x + y) of two Poisson counts has variance 4xy/(x + y)³: the test's own error bar,
    // which the calibration's must match.
    let expected = [2.0 / 1.8, 1.6 / 1.8, 1.0, 1.0];
    for (i, (f, want)) in figures.iter().zip(expected).enumerate() {
        let partner = &figures[i ^ 1];
        let (x, y) = (
            f.signal_rate_hz * light_seconds,
            partner.signal_rate_hz * light_seconds,
        );
        let sigma = (4.0 * x * y / (x + y).powi(3)).sqrt();
        assert!(
            (0.5..2.0).contains(&(f.relative_efficiency_error / sigma)),
            "{f:?}: error bar against {sigma}"
        );
        assert!(
            (f.relative_efficiency - want).abs() < 5.0 * sigma,
            "{f:?} vs {want} ± {sigma}"
        );
    }
    assert!(!figures[0].flags.is_empty() && !figures[1].flags.is_empty());
    assert!(
        figures[2].flags.is_empty() && figures[3].flags.is_empty(),
        "{figures:?}"
    );
    // Ten dark counts a second are too few to say anything about afterpulsing.
    assert!(figures.iter().all(|f| f.afterpulse_probability.is_none()));
}

#[tokio::test]
async fn the_afterpulse_probability_of_free_running_ingaas_is_measured() {
    let spec = LinkPreset::IngaasFree.spec(10.0);
    let figures = characterised(&spec, 9, 40, 0.3).await;
    let detector = &spec.receiver.detectors[0];
    for f in &figures {
        // A trapped carrier makes the next click only if it is released before the next dark
        // count: with release rate 1/τ against dark rate r, p/(1 + r·τ).
        let tau = detector.afterpulse_decay_ps as f64 * 1e-12;
        let expected = detector.afterpulse_probability / (1.0 + f.dark_rate_hz * tau);
        let (p, error) = (
            f.afterpulse_probability.unwrap(),
            f.afterpulse_error.unwrap(),
        );
        assert!((p - expected).abs() < 5.0 * error, "{f:?} vs {expected}");
        assert!(f.dark_intervals > 10_000, "{f:?}");
    }
}

/// Intensity calibration settings for `spec`, with the transmission computed from it.
fn intensity_settings(spec: &LinkSpec, seconds: f64) -> IntensitySettings {
    let rate = spec.source.rep_rate_hz as f64;
    let detector = &spec.receiver.detectors[0];
    let fiber = spec.fiber.transmission();
    let eta = fiber * spec.receiver.optics_transmission * detector.efficiency;
    let mut slots = SlotConfig::standard(rate, u64::from(spec.source.sync_divider));
    // Dark counts of the four detectors that fall in the gate.
    let gate_s = slots.gate_ps as f64 * 1e-12;
    let background = spec
        .receiver
        .detectors
        .iter()
        .map(|d| d.dark.per_gate(gate_s))
        .sum();
    slots.delays_ps = [0; 4];
    IntensitySettings {
        slots,
        transmission: Probability::new(eta).unwrap(),
        background_per_slot: background,
        dead_time_ps: spec.receiver.detectors.map(|d| d.dead_time_ps),
        duration: Duration::from_secs_f64(seconds),
        batch: BATCH,
        tolerance: 0.1,
    }
}

#[tokio::test]
async fn intensities_come_back_from_counts_at_a_known_transmission() {
    for (preset, km, seconds) in [(LinkPreset::Gys, 25.0, 5.0), (LinkPreset::Snspd, 50.0, 0.2)] {
        let spec = preset.spec(km);
        let bench = EmulatedBench::prepare_measure(&spec, 21).unwrap();
        let mut source = bench.wcp_source().unwrap();
        let mut tagger = bench.tagger(0, BATCH).unwrap();
        let settings = intensity_settings(&spec, seconds);
        let found = calibrate_intensities(&mut tagger, &mut source, &settings)
            .await
            .unwrap();
        // The presets have a vacuum class: the background comes from it, and is the dark
        // counts' share of the gate (within its Poisson error and the dark estimate's spread).
        assert!(found.background_from_vacuum);
        let vacuum = found
            .classes
            .iter()
            .find(|f| f.configured_mu == 0.0)
            .unwrap();
        let dark_expected = settings.background_per_slot * vacuum.sent_slots;
        assert!(
            (found.background_per_slot * vacuum.sent_slots - dark_expected).abs()
                < 5.0 * dark_expected.max(1.0).sqrt(),
            "{found:?}"
        );
        let figures = &found.classes;
        assert_eq!(figures.len(), spec.source.intensities.len());
        for f in figures {
            let truth = spec.source.intensities[f.class].mean_photon_number;
            assert_eq!(f.configured_mu, truth);
            // μ comes from the share c of sent slots with a click, less the background b:
            // μ = −ln(1 − (c − b))/η, so σ_μ = sqrt(c(1 − c)/sent) / (η (1 − c + b)), with c
            // at least one count's worth where none was seen (the vacuum class). The
            // calibration's error bar must agree; allowed: five of those, plus 0.2 % of μ for
            // the first-order dead-time correction (the SNSPDs here are dead for 2 % of the
            // time; the residual is of order 2 %²).
            let c = f.detected_slots as f64 / f.sent_slots;
            let b = found.background_per_slot;
            let eta = settings.transmission.get();
            let counted = c.max(1.0 / f.sent_slots);
            let sigma = (counted * (1.0 - c) / f.sent_slots).sqrt() / (eta * (1.0 - c + b));
            assert!(
                (0.5..2.0).contains(&(f.measured_mu_error / sigma)),
                "{preset:?}: {f:?}: error bar against {sigma}"
            );
            let allowed = 5.0 * sigma + 0.002 * truth;
            assert!((f.measured_mu - truth).abs() < allowed, "{preset:?}: {f:?}");
            assert!(f.flag.is_none(), "{f:?}");
        }
    }
}

#[tokio::test]
async fn whole_slot_delays_at_gigahertz_rates_come_from_the_source_pattern() {
    // At 1 GHz these cables are several slots apart: H two slots late, V one early, A twelve.
    let cables: [i64; 5] = [0, 1_900, -800, 3_100, 12_450];
    let mut spec = LinkPreset::IngaasGated.spec(25.0);
    spec.tagger.channel_delays_ps[..5].copy_from_slice(&cables);
    let bench = EmulatedBench::prepare_measure(&spec, 3).unwrap();
    let mut tagger = bench.tagger(0, BATCH).unwrap();
    let mut source = bench.wcp_source().unwrap();
    let settings = delay_settings(&spec, Duration::from_millis(100));
    let timing = calibrate_timing(&mut tagger, &mut source, &settings)
        .await
        .unwrap();
    assert_eq!(timing.whole_slots, [2, -1, 3, 12]);
    for (d, &total) in timing.slots.delays_ps.iter().enumerate() {
        assert!((total - cables[d + 1]).abs() <= 1, "detector {d}: {total}");
    }
}

/// A tracker aligned on a bench whose fiber turns by `angle` about `axis` (no drift), with a
/// monitor on its tagger.
async fn tracker_on(
    axis: [f64; 3],
    angle_rad: f64,
) -> (
    Tracker,
    EmulatedPolarizationController,
    TaggedMonitor<EmulatedTagger, EmulatedWcpSource>,
) {
    let mut spec = LinkPreset::Snspd.spec(25.0);
    spec.fiber.drift_rad_per_sqrt_s = 0.0;
    spec.fiber.initial_rotation = InitialRotation::Fixed { axis, angle_rad };
    spec.receiver.controller = ControllerSpec::four_squeezers();
    let bench = EmulatedBench::prepare_measure(&spec, 5).unwrap();
    let slots = SlotConfig::standard(
        spec.source.rep_rate_hz as f64,
        u64::from(spec.source.sync_divider),
    );
    let tagger = bench.tagger(0, BATCH).unwrap();
    let source = bench.wcp_source().unwrap();
    let monitor =
        TaggedMonitor::new(tagger, source, BATCH, slots, Feedback::DisclosedBits).unwrap();
    let mut controller = bench.polarization_controller(0).unwrap();
    let tracker = Tracker::for_controller(&mut controller).await.unwrap();
    (tracker, controller, monitor)
}

#[tokio::test]
async fn a_saved_alignment_is_reused_while_the_fiber_holds_and_refused_once_it_moved() {
    let (mut tracker, mut controller, mut monitor) = tracker_on([0.3, -0.5, 0.8], 1.9).await;
    tracker.align(&mut controller, &mut monitor).await.unwrap();
    let saved = PolarizationCalibration::from_tracker(&tracker, controller.identity());
    // The same fiber: the saved setting still aligns, found with one measurement.
    let (mut fresh, mut controller, mut monitor) = tracker_on([0.3, -0.5, 0.8], 1.9).await;
    let started = monitor.elapsed();
    assert!(
        fresh
            .resume(&mut controller, &mut monitor, &saved)
            .await
            .unwrap()
    );
    assert!(monitor.elapsed().saturating_sub(started) < Duration::from_millis(100));
    assert_eq!(fresh.setting(), saved.setting.as_slice());
    assert!(!fresh.paused());
    // The fiber has turned since: the loop says so instead of tracking from a wrong start.
    let (mut moved, mut controller, mut monitor) = tracker_on([0.8, 0.5, -0.3], 2.6).await;
    assert!(
        !moved
            .resume(&mut controller, &mut monitor, &saved)
            .await
            .unwrap()
    );
}
