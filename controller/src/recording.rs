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
        };
        recording.writer = Some(
            PtuWriter::new(BufWriter::new(file), info)
                .with_context(|| format!("writing {}", recording.temporary.display()))?,
        );
        Ok(recording)
    }

    /// Appends tags (in time order, at times ≥ 0).
    pub fn write(&mut self, time_ps: &[i64], channel: &[u8]) -> Result<()> {
        if let Some(writer) = &mut self.writer {
            writer
                .write(time_ps, channel)
                .with_context(|| format!("recording to {}", self.path.display()))?;
        }
        Ok(())
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
