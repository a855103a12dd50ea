//! The emulated bench seen only through the driver traits: what code above the traits (the node
//! runtime, calibration) will see, with the world's ground truth used only to set up and check.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use qkd_drivers::emulator::{EmulatedBench, Pacing};
use qkd_drivers::{
    Basis, ChannelRole, DetectorError, EmissionRecords, ErrorKind, IntensityClass, PairSource,
    PolarizationController, PolarizationError, SinglePhotonDetectors, SourceError, TagBatch,
    TaggerError, TimeTagger, WcpSettings, WcpSource,
};
use qkd_firmware_sim::world::{
    ControllerSpec, EntangledLinkSpec, FiberSpec, InitialRotation, LinkPreset, LinkSpec,
    ReceiverSpec, SpdcSourceSpec, TaggerSpec,
};
use qkd_units::{MeanPhotonNumber, Picoseconds, Probability, Volts};

const BATCH: Duration = Duration::from_millis(2);

/// The SNSPD bench at 10 km with one squeezer at 45° after a fiber that turns H into circular.
fn misaligned_bench() -> EmulatedBench {
    let mut spec: LinkSpec = LinkPreset::Snspd.spec(10.0);
    spec.fiber.initial_rotation = InitialRotation::Fixed {
        axis: [0.0, 1.0, 0.0],
        angle_rad: std::f64::consts::FRAC_PI_2,
    };
    spec.fiber.misalignment = 0.0;
    // Settling takes 100 µs, so a test must wait for the move.
    spec.receiver.controller =
        ControllerSpec::one_squeezer(std::f64::consts::FRAC_PI_4, 100_000_000);
    EmulatedBench::prepare_measure(&spec, 7).unwrap()
}

/// Reads `batches` batches and returns all tags.
async fn stream(tagger: &mut impl TimeTagger, batches: usize) -> TagBatch {
    let mut all = TagBatch::default();
    let mut batch = TagBatch::default();
    for _ in 0..batches {
        tagger.read(&mut batch).await.unwrap();
        all.time_ps.extend_from_slice(&batch.time_ps);
        all.channel.extend_from_slice(&batch.channel);
        all.missed_events += batch.missed_events;
        all.overflow |= batch.overflow;
    }
    all
}

/// Time of the first sync tag of a batch.
fn first_sync(tags: &TagBatch) -> i64 {
    tags.time_ps
        .iter()
        .zip(&tags.channel)
        .find(|(_, c)| **c == 0)
        .map(|(t, _)| *t)
        .unwrap()
}

/// The smallest count a Poisson variable of mean `mu` reaches with probability at most `p`
/// (Chernoff: P(X ≥ k) ≤ e^{−μ} (eμ/k)^k for k > μ).
fn poisson_ceiling(mu: f64, p: f64) -> usize {
    let mut k = mu.floor() as usize + 1;
    while (-mu + k as f64 * (1.0 + (mu / k as f64).ln())).exp() > p {
        k += 1;
    }
    k
}

/// Z-basis errors expected on the aligned bench: only dark counts, which fall in slots of either
/// basis and are wrong half the time, so half of those in Z slots — a quarter of all the dark
/// counts of H and V over `seconds`.
fn dark_errors(seconds: f64) -> f64 {
    let detectors = LinkPreset::Snspd.spec(10.0).receiver.detectors;
    0.25 * (detectors[0].dark.per_gate(seconds) + detectors[1].dark.per_gate(seconds))
}

/// Z-basis error rate of detections, found the way a receiver without slot recovery could on
/// this bench (no clock offset or drift): slot = (tag - slot 0 arrival) / period, Alice's
/// records fetched through the source trait. Returns (rate, matched, errors).
async fn z_error_rate(
    tags: &TagBatch,
    source: &mut impl WcpSource,
    zero: i64,
) -> (f64, usize, usize) {
    let period = (1e12 / source.repetition_rate().get()).round() as i64;
    let (mut slots, mut outcomes) = (Vec::new(), Vec::new());
    for (&t, &c) in tags.time_ps.iter().zip(&tags.channel) {
        if c == 1 || c == 2 {
            slots.push(((t - zero) as f64 / period as f64).round() as u64);
            outcomes.push(c - 1);
        }
    }
    let mut records = EmissionRecords::default();
    source.emissions(&slots, &mut records).await.unwrap();
    let (mut matched, mut errors) = (0usize, 0usize);
    for (i, &bit) in outcomes.iter().enumerate() {
        if records.basis[i] == Basis::Z {
            matched += 1;
            errors += usize::from(records.bit[i] != bit);
        }
    }
    (errors as f64 / matched as f64, matched, errors)
}

#[tokio::test]
async fn moving_the_controller_changes_what_the_detectors_see() {
    let bench = misaligned_bench();
    let mut source = bench.wcp_source().unwrap();
    let mut controller = bench.polarization_controller(0).unwrap();
    let mut tagger = bench.tagger(0, BATCH).unwrap();

    let first = stream(&mut tagger, 5).await;
    let zero = first_sync(&first); // read from the start: the arrival of slot 0
    let (uncompensated, n, _) = z_error_rate(&first, &mut source, zero).await;
    assert!(n > 5_000, "{n} sifted");
    assert!((uncompensated - 0.5).abs() < 5.0 * (0.25 / n as f64).sqrt());

    // Five batches: errors (or, flipped, right bits) come only from dark counts, below the
    // count their Poisson mean exceeds with probability 10^-7.
    let ceiling = poisson_ceiling(dark_errors(5.0 * BATCH.as_secs_f64()), 1e-7);
    // -1000 mV adds -π/2 and undoes the fiber; the first batch still settles.
    controller.set(&[-1000.0]).await.unwrap();
    assert_eq!(controller.get().await.unwrap(), vec![-1000.0]);
    let _ = stream(&mut tagger, 1).await;
    let (compensated, n, errors) =
        z_error_rate(&stream(&mut tagger, 5).await, &mut source, zero).await;
    assert!(n > 5_000);
    assert!(
        errors < ceiling,
        "compensated QBER {compensated}: {errors} errors, dark counts explain {ceiling}"
    );

    // +1000 mV doubles the rotation: every Z bit flips.
    controller.set(&[1000.0]).await.unwrap();
    let _ = stream(&mut tagger, 1).await;
    let (flipped, n, errors) = z_error_rate(&stream(&mut tagger, 5).await, &mut source, zero).await;
    assert!(
        n - errors < ceiling,
        "flipped QBER {flipped}: {} right bits, dark counts explain {ceiling}",
        n - errors
    );
}

#[tokio::test]
async fn controller_refuses_out_of_range_values_with_typed_errors() {
    let bench = misaligned_bench();
    let mut controller = bench.polarization_controller(0).unwrap();
    let spec = &controller.actuators()[0];
    assert_eq!((spec.min, spec.max), (-5000.0, 5000.0));
    assert_eq!(controller.settle_time(), Duration::from_micros(100));
    let err = controller.set(&[5001.0]).await.unwrap_err();
    assert!(matches!(
        err,
        PolarizationError::OutOfRange { actuator: 0, .. }
    ));
    assert_eq!(err.kind(), ErrorKind::Abort);
    assert!(matches!(
        controller.set(&[0.0, 0.0]).await,
        Err(PolarizationError::WrongCount {
            expected: 1,
            got: 2
        })
    ));
    assert!(controller.set(&[f64::NAN]).await.is_err());
    assert_eq!(
        controller.get().await.unwrap(),
        vec![0.0],
        "refused commands change nothing"
    );
    // Paddle controllers are driven in degrees within 0..170.
    let mut spec = LinkPreset::Snspd.spec(1.0);
    spec.receiver.controller = ControllerSpec::three_paddles();
    let bench = EmulatedBench::prepare_measure(&spec, 1).unwrap();
    let paddles = bench.polarization_controller(0).unwrap();
    assert_eq!(paddles.actuators().len(), 3);
    assert!((paddles.actuators()[1].max - 170.0).abs() < 1e-9);
    // Without a controller there is nothing to hand out.
    let plain = EmulatedBench::prepare_measure(&LinkPreset::Snspd.spec(1.0), 1).unwrap();
    assert!(plain.polarization_controller(0).is_none());
}

#[tokio::test]
async fn tag_stream_is_ordered_with_sync_at_the_divided_rate() {
    let bench = EmulatedBench::prepare_measure(&LinkPreset::Snspd.spec(25.0), 3).unwrap();
    let mut tagger = bench.tagger(0, BATCH).unwrap();
    assert_eq!(tagger.channels()[0].role, ChannelRole::Sync);
    assert_eq!(tagger.channels()[3].role, ChannelRole::Detector(2));
    let tags = stream(&mut tagger, 10).await;
    assert!(
        tags.time_ps.windows(2).all(|w| w[0] <= w[1]),
        "non-decreasing"
    );
    let sync: Vec<i64> = tags
        .time_ps
        .iter()
        .zip(&tags.channel)
        .filter(|(_, c)| **c == 0)
        .map(|(t, _)| *t)
        .collect();
    // 100 MHz / 1000 = one sync every 10 µs; jitter 10 ps FWHM.
    let gaps_ok = sync
        .windows(2)
        .all(|w| (w[1] - w[0] - 10_000_000).abs() < 100);
    assert!(sync.len() > 1_000 && gaps_ok);
    assert_eq!(tags.missed_events, 0);
    assert!(!tags.overflow);
}

#[tokio::test]
async fn delays_and_trigger_levels_act_per_channel() {
    let mut spec = LinkPreset::Snspd.spec(5.0);
    spec.tagger = TaggerSpec {
        sync_jitter_fwhm_ps: 0.0,
        ..TaggerSpec::default()
    };
    let bench = EmulatedBench::prepare_measure(&spec, 4).unwrap();
    let mut tagger = bench.tagger(0, BATCH).unwrap();
    let before = first_sync(&stream(&mut tagger, 1).await);
    tagger.set_delay(0, Picoseconds(1234)).await.unwrap();
    let after = first_sync(&stream(&mut tagger, 1).await);
    assert_eq!((after - before - 1234).rem_euclid(10_000_000), 0);

    // A level above the 0.5 V detector pulses silences that input only.
    tagger
        .set_trigger_level(1, Volts::new(0.8).unwrap())
        .await
        .unwrap();
    let tags = stream(&mut tagger, 2).await;
    assert!(!tags.channel.contains(&1));
    assert!(tags.channel.contains(&2));

    assert!(matches!(
        tagger.set_delay(9, Picoseconds(0)).await,
        Err(TaggerError::NoSuchChannel { channel: 9, .. })
    ));
    let err = tagger
        .set_trigger_level(1, Volts::new(7.0).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, TaggerError::Invalid(_)), "{err}");
}

#[tokio::test]
async fn a_stopped_tagger_refuses_to_read_and_an_unread_one_overflows() {
    let bench = EmulatedBench::prepare_measure(&LinkPreset::Snspd.spec(5.0), 5).unwrap();
    let mut tagger = bench.tagger(0, BATCH).unwrap();
    let mut detectors = bench.detectors(0).unwrap();
    tagger.stop().await.unwrap();
    let mut batch = TagBatch::default();
    assert!(matches!(
        tagger.read(&mut batch).await,
        Err(TaggerError::NotRunning {})
    ));
    tagger.start().await.unwrap();

    // Time advanced by someone else (a detector count) fills the tagger's buffer; beyond its
    // limit tags are lost, and the next batch says so.
    bench.set_buffer_limit(1_000);
    detectors.counts(Duration::from_millis(5)).await.unwrap();
    tagger.read(&mut batch).await.unwrap();
    assert!(batch.overflow);
    assert!(batch.missed_events > 0);
    assert!(batch.len() >= 1_000);
    bench.set_buffer_limit(qkd_drivers::emulator::NODE_BUFFER_TAGS);
    tagger.read(&mut batch).await.unwrap();
    assert!(!batch.overflow, "the flag reports each overflow once");
}

#[tokio::test]
async fn dark_counts_through_the_detector_trait() {
    // Source off: only dark counts. SNSPD preset: 10 /s per detector, 30 ns dead time.
    let bench = EmulatedBench::prepare_measure(&LinkPreset::Snspd.spec(5.0), 6).unwrap();
    let mut source = bench.wcp_source().unwrap();
    let mut detectors = bench.detectors(0).unwrap();
    assert_eq!(detectors.channels().len(), 4);
    source.set_enabled(false).await.unwrap();
    // Nobody reads tags here: stop the tagger rather than buffer 100 s of sync pulses.
    bench.tagger(0, BATCH).unwrap().stop().await.unwrap();
    let seconds = 100.0;
    let counts = detectors
        .counts(Duration::from_secs_f64(seconds))
        .await
        .unwrap();
    let total: u64 = counts.iter().sum();
    let expected = 4.0 * 10.0 * seconds;
    assert!(
        (total as f64 - expected).abs() < 5.0 * expected.sqrt(),
        "{total} vs {expected}"
    );

    assert!(matches!(
        detectors.set_bias(0, Volts::new(1.0).unwrap()).await,
        Err(DetectorError::Unsupported(_))
    ));
    assert!(matches!(
        detectors.set_dead_time(7, Picoseconds(1)).await,
        Err(DetectorError::NoSuchChannel {
            channel: 7,
            count: 4
        })
    ));
    assert!(matches!(
        detectors.set_dead_time(0, Picoseconds(-1)).await,
        Err(DetectorError::Invalid(_))
    ));
    detectors
        .set_dead_time(0, Picoseconds(50_000))
        .await
        .unwrap();
    assert_eq!(detectors.channels()[0].dead_time, Picoseconds(50_000));
}

#[tokio::test]
async fn source_configuration_is_validated_and_takes_effect() {
    let bench = EmulatedBench::prepare_measure(&LinkPreset::Snspd.spec(20.0), 8).unwrap();
    let mut source = bench.wcp_source().unwrap();
    let mut detectors = bench.detectors(0).unwrap();
    let class = |mu: f64, p: f64| IntensityClass {
        mean_photon_number: MeanPhotonNumber::new(mu).unwrap(),
        probability: Probability::new(p).unwrap(),
    };
    let single = |mu| WcpSettings {
        intensities: vec![class(mu, 1.0)],
        basis_z_probability: Probability::new(0.5).unwrap(),
        reference_share: Probability::default(),
    };
    let bad = WcpSettings {
        intensities: vec![class(0.5, 0.6), class(0.1, 0.3)],
        basis_z_probability: Probability::new(0.5).unwrap(),
        reference_share: Probability::default(),
    };
    let err = source.configure(&bad).await.unwrap_err();
    assert!(matches!(err, SourceError::Invalid(_)) && err.kind() == ErrorKind::Abort);

    // Clicks scale as 1 - exp(-μ η t) per pulse: doubling a small μ nearly doubles the counts.
    let window = Duration::from_millis(5);
    source.configure(&single(0.05)).await.unwrap();
    let low: u64 = detectors.counts(window).await.unwrap().iter().sum();
    source.configure(&single(0.1)).await.unwrap();
    let high: u64 = detectors.counts(window).await.unwrap().iter().sum();
    let eta: f64 = 0.1 * 0.8 * 0.9; // 20 km, optics, detectors
    let ratio = (1.0 - (-0.1 * eta).exp()) / (1.0 - (-0.05 * eta).exp());
    let sigma = ratio * (1.0 / low as f64 + 1.0 / high as f64).sqrt();
    assert!(
        ((high as f64 / low as f64) - ratio).abs() < 5.0 * sigma,
        "{high}/{low} vs {ratio}"
    );
    assert_eq!(source.settings(), &single(0.1));
}

#[tokio::test(start_paused = true)]
async fn real_time_pacing_never_runs_ahead_of_the_clock() {
    // At 100 km the emulator runs far faster than real time, so pacing has something to do.
    let bench = EmulatedBench::prepare_measure(&LinkPreset::Snspd.spec(100.0), 9).unwrap();
    bench.set_pacing(Pacing::RealTime);
    let mut tagger = bench.tagger(0, Duration::from_millis(50)).unwrap();
    let start = tokio::time::Instant::now();
    let mut batch = TagBatch::default();
    // Pacing runs on tokio's clock, which is paused here: it advances only through the pacing
    // sleeps, by exactly the emulated time read, however long the emulation took on the wall.
    for batches in 1..=3 {
        tagger.read(&mut batch).await.unwrap();
        assert_eq!(start.elapsed(), batches * Duration::from_millis(50));
    }
}

fn entangled_spec() -> EntangledLinkSpec {
    let mut spec = EntangledLinkSpec::new(
        SpdcSourceSpec {
            pair_rate_hz: 2e5,
            coupling_efficiency: 0.5,
            ..SpdcSourceSpec::with_rate(2e5)
        },
        [FiberSpec::standard(3.0), FiberSpec::standard(8.0)],
        ReceiverSpec::uniform(qkd_firmware_sim::world::DetectorPreset::Snspd.spec()),
    );
    spec.tagger_b.offset_ps = 5_000_000;
    spec
}

/// Pairs of tags, one per node, within `window` ps once B's known offset is removed.
fn coincidences(a: &TagBatch, b: &TagBatch, shift: i64, window: i64) -> usize {
    let mut j = 0;
    let mut count = 0;
    for &ta in &a.time_ps {
        while j < b.time_ps.len() && b.time_ps[j] - shift < ta - window {
            j += 1;
        }
        if j < b.time_ps.len() && (b.time_ps[j] - shift - ta).abs() <= window {
            count += 1;
        }
    }
    count
}

#[tokio::test]
async fn entangled_bench_gives_two_taggers_that_see_the_same_pairs() {
    let bench = EmulatedBench::entangled(&entangled_spec(), 10).unwrap();
    assert!(bench.wcp_source().is_none());
    let mut pairs = bench.pair_source().unwrap();
    let mut a = bench.tagger(0, BATCH).unwrap();
    let mut b = bench.tagger(1, BATCH).unwrap();
    assert!(bench.tagger(2, BATCH).is_none());
    let (tags_a, tags_b) = {
        let mut ta = TagBatch::default();
        let mut tb = TagBatch::default();
        for _ in 0..25 {
            let mut x = TagBatch::default();
            a.read(&mut x).await.unwrap();
            ta.time_ps.extend_from_slice(&x.time_ps);
            b.read(&mut x).await.unwrap();
            tb.time_ps.extend_from_slice(&x.time_ps);
        }
        (ta, tb)
    };
    // B's photons travel 5 km further (24.5 µs) and its clock reads 5 µs ahead.
    let shift = 5 * 4_897_000 + 5_000_000;
    let found = coincidences(&tags_a, &tags_b, shift, 200);
    // Expected: pair rate × time × both arms' efficiency, less the first-order share of photons
    // that find their detector dead (singles rate × 30 ns on each side, about 0.2 % each).
    let t = |km: f64| 10f64.powf(-0.02 * km);
    let (arm_a, arm_b) = (0.5 * t(3.0) * 0.9, 0.5 * t(8.0) * 0.9);
    let dead = 30e-9;
    let live = (1.0 - 2e5 * arm_a * dead) * (1.0 - 2e5 * arm_b * dead);
    let expected = 2e5 * 0.05 * arm_a * arm_b * live;
    assert!(
        (found as f64 - expected).abs() < 5.0 * expected.sqrt(),
        "{found} vs {expected}"
    );
    // Without the right shift there is nothing but accidentals.
    assert!(coincidences(&tags_a, &tags_b, 0, 200) < found / 100);

    pairs.set_enabled(false).await.unwrap();
    let mut x = TagBatch::default();
    a.read(&mut x).await.unwrap(); // pairs already in flight
    a.read(&mut x).await.unwrap();
    assert!(x.len() < 10, "only dark counts remain, got {}", x.len());
}
