//! Writing a PTU recording to disk: under a temporary name beside the target, renamed into place
//! only once complete, so a run that fails or is killed never leaves a partial file where a
//! finished recording is expected.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use qkd_drivers::ptu::{PtuWriter, RecordingInfo};

/// A recording being written.
#[derive(Debug)]
pub struct PtuRecording {
    writer: Option<PtuWriter<BufWriter<File>>>,
    temporary: PathBuf,
    path: PathBuf,
    /// Complete (and renamed into place, or kept where it is): nothing to clean up.
    in_place: bool,
    /// Tags stamped before the tagger's time 0, which the file cannot hold.
    before_start: u64,
}

impl PtuRecording {
    /// Starts a recording that will be `path`, described by `info`.
    pub fn create(path: &Path, info: &RecordingInfo) -> Result<Self> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        let temporary = path.with_file_name(name);
        let file = File::create(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        let mut recording = PtuRecording {
            writer: None,
            temporary,
            path: path.to_owned(),
            in_place: false,
            before_start: 0,
        };
        recording.writer = Some(
            PtuWriter::new(BufWriter::new(file), info)
                .with_context(|| format!("writing {}", recording.temporary.display()))?,
        );
        Ok(recording)
    }

    /// Appends tags in time order. Tags before time 0 (jitter at the start of a 0 km link puts
    /// the first photons a few ps before the tagger's clock starts) come first; a PTU file
    /// cannot hold them, so they are left out and counted in [`Self::before_start`].
    pub fn write(&mut self, time_ps: &[i64], channel: &[u8]) -> Result<()> {
        let start = time_ps.partition_point(|&t| t < 0);
        self.before_start += start as u64;
        let (time_ps, channel) = (&time_ps[start..], &channel[start.min(channel.len())..]);
        if let Some(writer) = &mut self.writer {
            writer
                .write(time_ps, channel)
                .with_context(|| format!("recording to {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Tags left out for being stamped before time 0.
    pub fn before_start(&self) -> u64 {
        self.before_start
    }

    /// Completes the file, makes it durable and moves it into place.
    pub fn finish(mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let file = writer
            .finish()
            .with_context(|| format!("finishing {}", self.path.display()))?
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .with_context(|| format!("writing {}", self.temporary.display()))?;
        file.sync_all()
            .with_context(|| format!("writing {}", self.temporary.display()))?;
        // Complete from here on: kept even if it cannot be moved into place.
        self.in_place = true;
        std::fs::rename(&self.temporary, &self.path).with_context(|| {
            format!(
                "moving the recording into place at {} (it is kept as {})",
                self.path.display(),
                self.temporary.display()
            )
        })
    }
}

impl Drop for PtuRecording {
    fn drop(&mut self) {
        if !self.in_place {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RecordingInfo {
        RecordingInfo {
            resolution_ps: 1,
            input_channels: 4,
            sync_rate_hz: 0,
            hardware: "test".into(),
            comment: String::new(),
        }
    }

    #[test]
    fn a_failed_recording_leaves_no_file_and_a_finished_one_is_in_place() {
        let dir = std::env::temp_dir().join(format!("qkd-recording-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.ptu");
        let mut failed = PtuRecording::create(&path, &info()).unwrap();
        failed.write(&[-6, 10, 20], &[1, 1, 2]).unwrap();
        assert_eq!(failed.before_start(), 1);
        // Out of time order: the writer refuses, and the partial file goes.
        failed.write(&[5], &[1]).unwrap_err();
        drop(failed);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

        let mut done = PtuRecording::create(&path, &info()).unwrap();
        done.write(&[10, 20], &[1, 2]).unwrap();
        done.finish().unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["run.ptu"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
