//! PTU decoding and writing: every record type on hand-built records, the shared real PicoHarp
//! file against an independent reader's figures, round trips, and damaged input.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;
use std::path::PathBuf;

use proptest::prelude::*;
use qkd_drivers::TagBatch;
use qkd_drivers::ptu::{Discard, PtuError, PtuHeader, PtuReader, PtuWriter, RecordingInfo};

/// A minimal header: record type, global resolution (s) and T3 bin (s), then `Header_End`.
fn header(record_type: u32, global_s: f64, bin_s: f64, extra: &[(&str, u32, [u8; 8])]) -> Vec<u8> {
    let mut h = b"PQTTTR\0\0".to_vec();
    h.extend_from_slice(b"1.0.00\0\0");
    let mut tag = |name: &str, code: u32, value: [u8; 8]| {
        let mut ident = [0u8; 32];
        ident[..name.len()].copy_from_slice(name.as_bytes());
        h.extend_from_slice(&ident);
        h.extend_from_slice(&(-1i32).to_le_bytes());
        h.extend_from_slice(&code.to_le_bytes());
        h.extend_from_slice(&value);
    };
    for (name, code, value) in extra {
        tag(name, *code, *value);
    }
    tag(
        "TTResultFormat_TTTRRecType",
        0x1000_0008,
        i64::from(record_type).to_le_bytes(),
    );
    tag(
        "MeasDesc_GlobalResolution",
        0x2000_0008,
        global_s.to_le_bytes(),
    );
    tag("MeasDesc_Resolution", 0x2000_0008, bin_s.to_le_bytes());
    tag("Header_End", 0xFFFF_0008, [0; 8]);
    h
}

fn file(record_type: u32, global_s: f64, bin_s: f64, records: &[u32]) -> Vec<u8> {
    let mut f = header(record_type, global_s, bin_s, &[]);
    for r in records {
        f.extend_from_slice(&r.to_le_bytes());
    }
    f
}

fn decode(bytes: &[u8]) -> Result<(TagBatch, qkd_drivers::ptu::RecordStats), PtuError> {
    let mut reader = PtuReader::new(Cursor::new(bytes))?;
    let mut batch = TagBatch::default();
    reader.decode_all(&mut batch)?;
    Ok((batch, reader.stats().clone()))
}

fn tags(batch: &TagBatch) -> Vec<(i64, u8)> {
    batch
        .time_ps
        .iter()
        .copied()
        .zip(batch.channel.iter().copied())
        .collect()
}

const HH_SPECIAL: u32 = 0x8000_0000;

#[test]
fn picoharp_t2_photons_overflows_and_markers() {
    let records = [
        (1 << 28) | 100,   // channel 1 at 100 units
        15 << 28,          // overflow: one wrap of 210698240
        5,                 // channel 0 (the sync input) at wrap + 5
        (15 << 28) | 0b10, // marker 2
        (1 << 28) | 7,
    ];
    let (batch, stats) = decode(&file(0x0001_0203, 4e-12, 4e-12, &records)).unwrap();
    let wrap = 210_698_240 * 4;
    assert_eq!(tags(&batch), vec![(400, 1), (wrap + 20, 0), (wrap + 28, 1)]);
    assert_eq!(
        (stats.overflow_records, stats.markers, stats.records),
        (1, 1, 5)
    );
    assert_eq!(stats.photons_by_channel[..2], [1, 2]);
}

#[test]
fn picoharp_t3_times_are_sync_index_times_period_plus_dtime() {
    let period = 12.5e-9;
    let records = [
        (2 << 28) | (10 << 16) | 3, // channel 2, dtime 10, nsync 3
        15 << 28,                   // overflow (dtime 0): 65536 syncs
        (1 << 28) | 1,              // channel 1, dtime 0, nsync 1
        (15 << 28) | (4 << 16),     // marker
    ];
    let (batch, stats) = decode(&file(0x0001_0303, period, 4e-12, &records)).unwrap();
    assert_eq!(
        tags(&batch),
        vec![(3 * 12_500 + 40, 2), (65_537 * 12_500, 1)]
    );
    assert_eq!(
        (stats.overflow_records, stats.markers, stats.sync_events),
        (1, 1, 0)
    );
}

#[test]
fn hydraharp_v1_t2_overflows_always_count_one_fixed_wrap() {
    let records = [
        10,                          // photon channel field 0 → tag channel 1
        HH_SPECIAL | (63 << 25) | 5, // overflow: V1 ignores the count → one wrap of 33552000
        HH_SPECIAL | 20,             // sync
        (3 << 25) | 30,              // photon field 3 → tag channel 4
        HH_SPECIAL | (2 << 25) | 1,  // marker
        HH_SPECIAL | (40 << 25),     // undefined special: counted, not interpreted
    ];
    let (batch, stats) = decode(&file(0x0001_0204, 1e-12, 1e-12, &records)).unwrap();
    assert_eq!(
        tags(&batch),
        vec![(10, 1), (33_552_020, 0), (33_552_030, 4)]
    );
    assert_eq!(
        (stats.sync_events, stats.markers, stats.unknown_special),
        (1, 1, 1)
    );
}

#[test]
fn generic_t2_overflow_records_carry_their_wrap_count() {
    for code in [0x0101_0204, 0x0001_0205, 0x0001_0206, 0x0001_0207] {
        let records = [
            HH_SPECIAL | (63 << 25) | 3, // three wraps
            7,
            HH_SPECIAL | (63 << 25), // zero means one
            HH_SPECIAL | 9,
        ];
        let (batch, _) = decode(&file(code, 5e-12, 5e-12, &records)).unwrap();
        let wrap = 33_554_432i64 * 5;
        assert_eq!(
            tags(&batch),
            vec![(3 * wrap + 35, 1), (4 * wrap + 45, 0)],
            "0x{code:08X}"
        );
    }
}

#[test]
fn hydraharp_t3_families() {
    let period = 1.0 / 78e6; // not a whole number of picoseconds
    let bin = 1e-12;
    let photon = |field: u32, dtime: u32, nsync: u32| (field << 25) | (dtime << 10) | nsync;
    let expect = |nsync: f64, dtime: i64| (nsync * period * 1e12).round() as i64 + dtime;
    // V1: an overflow is one wrap of 1024 syncs whatever its count field says.
    let records = [
        photon(0, 100, 5),
        HH_SPECIAL | (63 << 25) | 2,
        photon(1, 7, 1),
    ];
    let (batch, _) = decode(&file(0x0001_0304, period, bin, &records)).unwrap();
    assert_eq!(
        tags(&batch),
        vec![(expect(5.0, 100), 1), (expect(1025.0, 7), 2)]
    );
    for code in [0x0101_0304, 0x0001_0305, 0x0001_0306, 0x0001_0307] {
        let (batch, _) = decode(&file(code, period, bin, &records)).unwrap();
        assert_eq!(
            tags(&batch),
            vec![(expect(5.0, 100), 1), (expect(2049.0, 7), 2)]
        );
    }
}

/// The shared real recording, if this checkout has it beside the repository. Under CI
/// (`CI=true`) a missing file fails the test instead of skipping it: there the check must run.
fn shared_file() -> Option<PathBuf> {
    let dir = std::env::var_os("QKD_SHARED_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
        PathBuf::from,
    );
    let path = dir.join("picoquant/picoharp_v30_t2.ptu");
    if path.exists() {
        return Some(path);
    }
    let message = format!("{} not found (set QKD_SHARED_DATA)", path.display());
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the shared-data check: {message}"
    );
    eprintln!("skipped: {message}");
    None
}

#[test]
fn shared_picoharp_file_decodes_exactly_as_an_independent_reader_does() {
    // Figures from the Python package ptufile (decode_records) on the same file.
    let Some(path) = shared_file() else { return };
    let mut reader = PtuReader::open(&path).unwrap();
    assert_eq!(reader.layout().code, 0x0001_0203);
    assert_eq!(
        reader.header().int("TTResult_NumberOfRecords"),
        Some(929_254)
    );
    assert_eq!(reader.header().text("HW_Type"), Some("PicoHarp 300"));
    assert_eq!(reader.header().records_offset, 3632);
    let mut batch = TagBatch::default();
    reader.decode_all(&mut batch).unwrap();
    let stats = reader.stats();
    assert_eq!(stats.records, 929_254);
    assert_eq!(stats.photons_by_channel[0], 531_477);
    assert_eq!(stats.photons_by_channel[1], 388_700);
    assert_eq!(stats.photons_by_channel[2..].iter().sum::<u64>(), 0);
    assert_eq!(
        (stats.overflow_records, stats.markers, stats.sync_events),
        (9_077, 0, 0)
    );
    assert_eq!(stats.first_photon_ps, Some(32_486_569 * 4));
    assert_eq!(stats.last_photon_ps, Some(1_912_597_668_189 * 4));
    assert_eq!(batch.len(), 920_177);
    assert!(batch.time_ps.windows(2).all(|w| w[0] <= w[1]));
}

fn recording(times: &[i64], channels: &[u8], resolution_ps: u32) -> Vec<u8> {
    let info = RecordingInfo {
        resolution_ps,
        input_channels: 4,
        sync_rate_hz: 100_000,
        hardware: "qkd-node emulator".into(),
        comment: "test".into(),
    };
    let mut w = PtuWriter::new(Cursor::new(Vec::new()), &info).unwrap();
    w.write(times, channels).unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn written_files_read_back_exactly_with_long_gaps() {
    let times = [
        0,
        5,
        5,
        33_554_431,
        33_554_432,
        10_000_000_000_000,
        10_000_000_000_001,
        i64::from(u32::MAX) << 24,
    ];
    let channels = [0, 1, 4, 2, 0, 3, 1, 63];
    let bytes = recording(&times, &channels, 1);
    let mut reader = PtuReader::new(Cursor::new(&bytes)).unwrap();
    assert_eq!(
        reader.header().int("TTResult_NumberOfRecords"),
        Some(reader_records(&bytes))
    );
    let mut batch = TagBatch::default();
    reader.decode_all(&mut batch).unwrap();
    assert_eq!(batch.time_ps, times);
    assert_eq!(batch.channel, channels);
}

fn reader_records(bytes: &[u8]) -> i64 {
    let mut reader = PtuReader::new(Cursor::new(bytes)).unwrap();
    reader.decode_all(&mut Discard).unwrap();
    reader.stats().records as i64
}

#[test]
fn writer_refuses_what_the_format_cannot_hold() {
    let info = RecordingInfo {
        resolution_ps: 1,
        input_channels: 1,
        sync_rate_hz: 0,
        hardware: "x".into(),
        comment: String::new(),
    };
    let mut w = PtuWriter::new(Cursor::new(Vec::new()), &info).unwrap();
    assert!(matches!(w.write(&[-1], &[1]), Err(PtuError::Write(_))));
    w.write(&[10], &[1]).unwrap();
    assert!(matches!(w.write(&[9], &[1]), Err(PtuError::Write(_))));
    assert!(matches!(w.write(&[11], &[64]), Err(PtuError::Write(_))));
}

#[test]
fn damaged_files_name_the_byte_offset() {
    let good = file(0x0001_0203, 4e-12, 4e-12, &[1, 2, 3]);
    let records_at = good.len() - 12;
    // A record cut short.
    let err = decode(&good[..good.len() - 2]).unwrap_err();
    assert!(
        matches!(err, PtuError::Truncated { what: "record", offset, needed: 4, available: 2 } if offset == (records_at + 8) as u64),
        "{err}"
    );
    // A header cut inside a tag.
    let err = decode(&good[..100]).unwrap_err();
    assert!(
        matches!(
            err,
            PtuError::Truncated {
                what: "header tag",
                offset: 64,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("byte offset 64"));
    // Wrong magic, unknown record type, missing resolution.
    assert!(matches!(
        decode(b"PQTTTX\0\0rest"),
        Err(PtuError::BadMagic { .. })
    ));
    assert!(matches!(
        decode(&file(0x0001_0999, 4e-12, 4e-12, &[])),
        Err(PtuError::UnsupportedRecordType(0x0001_0999))
    ));
    assert!(matches!(
        decode(&file(0x0001_0203, -1.0, 4e-12, &[])),
        Err(PtuError::Inconsistent(_))
    ));
    // A string tag claiming more bytes than the file has.
    let long = header(
        0x0001_0203,
        4e-12,
        4e-12,
        &[("File_Comment", 0x4001_FFFF, 1_000u64.to_le_bytes())],
    );
    assert!(matches!(
        decode(&long),
        Err(PtuError::Truncated { what: "string", .. })
    ));
}

#[test]
fn unknown_tags_and_types_are_skipped() {
    let extra = [
        ("Vendor_Secret", 0x1000_0008, 7i64.to_le_bytes()),
        ("Vendor_Fixed", 0x3300_0008, [1; 8]),
        ("Vendor_Var", 0x5555_FFFF, 0u64.to_le_bytes()),
    ];
    let mut f = header(0x0001_0203, 4e-12, 4e-12, &extra);
    f.extend_from_slice(&((1u32 << 28) | 3).to_le_bytes());
    let (batch, _) = decode(&f).unwrap();
    assert_eq!(tags(&batch), vec![(12, 1)]);
    let bad = header(0x0001_0203, 4e-12, 4e-12, &[("Odd", 0x1234_5678, [0; 8])]);
    assert!(matches!(
        decode(&bad),
        Err(PtuError::CorruptHeader { offset: 16, .. })
    ));
}

#[test]
fn overflow_counts_that_exceed_64_bits_are_refused() {
    let records = vec![HH_SPECIAL | (63 << 25) | 0x1FF_FFFF; 600_000];
    let err = decode(&file(0x0001_0207, 1e-12, 1e-12, &records)).unwrap_err();
    assert!(matches!(err, PtuError::CorruptRecord { .. }), "{err}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = PtuHeader::read(Cursor::new(&bytes));
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_records_of_every_type_never_panic(
        records in proptest::collection::vec(any::<u32>(), 0..300),
        code in prop::sample::select(vec![0x0001_0203u32, 0x0001_0303, 0x0001_0204, 0x0001_0304, 0x0001_0207, 0x0001_0307]),
    ) {
        let _ = decode(&file(code, 1e-12, 1e-12, &records));
    }

    #[test]
    fn any_sorted_stream_round_trips(
        mut gaps in proptest::collection::vec((0i64..100_000_000_000, 0u8..=63), 0..200),
        resolution in 1u32..100,
    ) {
        let mut t = 0i64;
        let (mut times, mut channels) = (Vec::new(), Vec::new());
        for (gap, c) in gaps.drain(..) {
            t += gap / i64::from(resolution) * i64::from(resolution);
            times.push(t);
            channels.push(c);
        }
        let bytes = recording(&times, &channels, resolution);
        let (batch, _) = decode(&bytes).unwrap();
        prop_assert_eq!(batch.time_ps, times);
        prop_assert_eq!(batch.channel, channels);
    }
}
