//! The tag stream on loopback: a node reading its receiver's tags over TCP sees exactly what the
//! emulated tagger delivers, channel roles included, and a stream that breaks its layout is
//! refused with a typed error.
// Test helpers outside #[test] functions may unwrap: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use qkd_drivers::emulator::{EmulatedBench, Pacing};
use qkd_drivers::tag_stream::{StreamDepth, StreamTagger, serve};
use qkd_drivers::{ChannelRole, TagBatch, TaggerError, TimeTagger};
use qkd_firmware_sim::world::LinkPreset;
use tokio::io::AsyncWriteExt;

const BATCH: Duration = Duration::from_millis(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_tagger_delivers_what_the_emulated_one_does() {
    let spec = LinkPreset::Snspd.spec(25.0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    // The served bench runs in real time, as `qkd sim serve` runs it: the reader keeps up.
    let served = EmulatedBench::prepare_measure(&spec, 3).unwrap();
    served.set_pacing(Pacing::RealTime);
    let mut reader_task = {
        let address = address.clone();
        tokio::spawn(async move { StreamTagger::connect(&address).await })
    };
    let accepted = tokio::spawn(serve(
        listener,
        served.tagger(0, BATCH).unwrap(),
        StreamDepth::Deep,
    ));
    let mut remote = (&mut reader_task).await.unwrap().unwrap();
    let roles: Vec<ChannelRole> = remote.channels().iter().map(|c| c.role).collect();
    assert_eq!(roles[0], ChannelRole::Sync);
    assert_eq!(roles[1..5], [0, 1, 2, 3].map(ChannelRole::Detector));
    assert_eq!(roles[5], ChannelRole::Marker);
    // The reference: the same world, read directly. The server may have read batches before the
    // reader connected; align on the first streamed tag.
    let reference_bench = EmulatedBench::prepare_measure(&spec, 3).unwrap();
    let mut reference = reference_bench.tagger(0, BATCH).unwrap();
    let (mut streamed, mut direct) = (Vec::new(), Vec::new());
    let mut batch = TagBatch::default();
    while streamed.len() < 20_000 {
        remote.read(&mut batch).await.unwrap();
        streamed.extend(
            batch
                .time_ps
                .iter()
                .copied()
                .zip(batch.channel.iter().copied()),
        );
    }
    let first = streamed[0].0;
    while direct
        .last()
        .is_none_or(|&(t, _)| t < streamed.last().unwrap().0)
    {
        reference.read(&mut batch).await.unwrap();
        direct.extend(
            batch
                .time_ps
                .iter()
                .copied()
                .zip(batch.channel.iter().copied())
                .filter(|&(t, _)| t >= first),
        );
    }
    assert_eq!(streamed[..], direct[..streamed.len()]);
    accepted.abort();
}

#[tokio::test]
async fn a_stream_that_breaks_its_layout_is_refused() {
    for (bytes, expected) in [
        (b"NOTTAGS!\x01\0\0\0\x06".to_vec(), "not a tag stream"),
        (
            // A valid hello with one sync channel, then a frame of 2^23 tags.
            [
                &b"QKDTAGS1\x01\0\0\0\x01\0"[..],
                &[0, 0, 0x80, 0][..],
                &[0u8; 13][..],
            ]
            .concat(),
            "a frame of 8388608 tags",
        ),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(&bytes).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let error = match StreamTagger::connect(&address).await {
            Err(e) => e,
            Ok(mut tagger) => tagger.read(&mut TagBatch::default()).await.unwrap_err(),
        };
        assert!(matches!(error, TaggerError::Transport(_)), "{error:?}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

/// A tagger whose channels are numbered from 1, as a T3 recording's detectors are: every
/// millisecond a batch of `tags` tags, on channels 1 and 2 in turn, 1 ps apart.
struct NumberedFromOne {
    identity: qkd_drivers::DeviceIdentity,
    channels: Vec<qkd_drivers::TaggerChannel>,
    now_ps: i64,
    tags: usize,
}

impl NumberedFromOne {
    fn new(tags: usize) -> Self {
        NumberedFromOne {
            identity: qkd_drivers::DeviceIdentity {
                vendor: "test".into(),
                model: "numbered from one".into(),
                serial: "1".into(),
                firmware: "1".into(),
            },
            channels: (0..2)
                .map(|d| qkd_drivers::TaggerChannel {
                    index: d + 1,
                    role: ChannelRole::Detector(d),
                })
                .collect(),
            now_ps: 0,
            tags,
        }
    }
}

impl TimeTagger for NumberedFromOne {
    fn identity(&self) -> &qkd_drivers::DeviceIdentity {
        &self.identity
    }

    fn channels(&self) -> &[qkd_drivers::TaggerChannel] {
        &self.channels
    }

    fn resolution(&self) -> qkd_units::Picoseconds {
        qkd_units::Picoseconds(1)
    }

    async fn set_delay(&mut self, _: u8, _: qkd_units::Picoseconds) -> Result<(), TaggerError> {
        Err(TaggerError::Unsupported("delays"))
    }

    async fn set_trigger_level(&mut self, _: u8, _: qkd_units::Volts) -> Result<(), TaggerError> {
        Err(TaggerError::Unsupported("levels"))
    }

    async fn start(&mut self) -> Result<(), TaggerError> {
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TaggerError> {
        Ok(())
    }

    async fn read(&mut self, batch: &mut TagBatch) -> Result<(), TaggerError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        batch.clear();
        for i in 0..self.tags {
            self.now_ps += 1;
            batch.time_ps.push(self.now_ps);
            batch.channel.push(1 + (i % 2) as u8);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_travel_by_channel_index_not_by_position() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let tagger = NumberedFromOne::new(2);
    let served = tokio::spawn(serve(listener, tagger, StreamDepth::Deep));
    let mut remote = StreamTagger::connect(&address).await.unwrap();
    let roles: Vec<ChannelRole> = remote.channels().iter().map(|c| c.role).collect();
    assert_eq!(
        roles,
        [
            ChannelRole::Other,
            ChannelRole::Detector(0),
            ChannelRole::Detector(1)
        ]
    );
    let mut batch = TagBatch::default();
    remote.read(&mut batch).await.unwrap();
    assert_eq!(batch.channel, [1, 2]);
    served.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_a_frame_travels_as_several() {
    // A reader that fell behind a shared world is handed everything since its last read.
    let max = qkd_protocol::tag_stream::MAX_FRAME_TAGS as usize;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let served = tokio::spawn(serve(
        listener,
        NumberedFromOne::new(max + 5),
        StreamDepth::Shallow,
    ));
    let mut remote = StreamTagger::connect(&address).await.unwrap();
    let (mut first, mut second) = (TagBatch::default(), TagBatch::default());
    remote.read(&mut first).await.unwrap();
    remote.read(&mut second).await.unwrap();
    // A reader joins between batches: the frames of one batch, in order, nothing lost.
    let (big, small) = (first, second);
    assert_eq!(big.len(), max);
    assert_eq!(small.len(), 5);
    assert!(big.time_ps.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(small.time_ps[0], big.time_ps[max - 1] + 1);
    served.abort();
}
