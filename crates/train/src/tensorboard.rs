//! TensorBoard event files: writing (our own writer over tensorboard-rs's record framing, so
//! that every I/O error comes back as an error) and reading back (for tests and for `wm`
//! itself, which checks what it wrote).
//!
//! Tags are namespaced: `loss/*` for the loss terms, `eval/*` for held-out metrics, `perf/*` for
//! throughput, `config` (text) for the hyperparameters, logged once.
//!
//! Each [`TensorBoard`] writes a new file named as TensorFlow names them,
//! `events.out.tfevents.{unix seconds}.{host}.{pid}.{n}`, created exclusively: a file that
//! exists (a resume in the same second, another process) is never overwritten, `n` counts up
//! instead.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use protobuf::{Message, RepeatedField};
use tensorboard_proto::event::Event;
use tensorboard_proto::summary::{
    Summary, Summary_Image, Summary_Value, SummaryMetadata, SummaryMetadata_PluginData,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::TensorShapeProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::record_writer::RecordWriter;

/// Errors reading event files back.
#[derive(Debug, thiserror::Error)]
pub enum EventFileError {
    /// The folder or a file could not be read.
    #[error("cannot read TensorBoard events in {path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record is truncated or not a valid event.
    #[error("TensorBoard event file {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The event file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A write to an event file failed (a full disk, a vanished folder, ...). After the first
/// failure the writer drops every later event, and [`TensorBoard::flush`] returns this error.
#[derive(Debug, thiserror::Error)]
#[error("cannot write TensorBoard event file {}: {source}", .path.display())]
pub struct TensorBoardError {
    /// The event file.
    pub path: PathBuf,
    /// The first I/O error.
    #[source]
    pub source: std::io::Error,
}

/// Writes scalars, images and text to one new event file in a run folder.
///
/// Writes are buffered and cannot fail on their own: the first I/O error is kept, later events
/// are dropped, and [`flush`](Self::flush) (which the trainer calls at every evaluation and at
/// the end) returns it. Dropping a writer flushes it, ignoring errors.
pub struct TensorBoard {
    writer: RecordWriter<BufWriter<File>>,
    path: PathBuf,
    error: Option<std::io::Error>,
}

impl std::fmt::Debug for TensorBoard {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TensorBoard")
            .field("path", &self.path)
            .field("error", &self.error)
            .finish()
    }
}

impl TensorBoard {
    /// Creates a new event file in `dir` (created if missing) and writes its version record;
    /// fails if the file cannot be created or written.
    pub fn create(dir: &Path) -> Result<Self, std::io::Error> {
        std::fs::create_dir_all(dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = host_name();
        let pid = std::process::id();
        let mut attempt = 0u32;
        let (file, path) = loop {
            let path = dir.join(format!(
                "events.out.tfevents.{:010}.{host}.{pid}.{attempt}",
                now.as_secs()
            ));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(error)
                    if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 10_000 =>
                {
                    attempt += 1
                }
                Err(error) => {
                    return Err(std::io::Error::new(
                        error.kind(),
                        format!("creating {}: {error}", path.display()),
                    ));
                }
            }
        };
        let mut tensorboard = Self::from_file(file, path);
        let mut version = Event::new();
        version.set_wall_time(now.as_secs_f64());
        version.set_file_version("brain.Event:2".to_string());
        tensorboard.write_event(&version);
        if let Err(error) = tensorboard.flush() {
            // An empty event file would only confuse readers.
            let _ = std::fs::remove_file(&error.path);
            return Err(std::io::Error::new(error.source.kind(), error.to_string()));
        }
        Ok(tensorboard)
    }

    fn from_file(file: File, path: PathBuf) -> Self {
        Self {
            writer: RecordWriter::new(BufWriter::new(file)),
            path,
            error: None,
        }
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs one scalar.
    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.write_summary(tensorboard_rs::summary::scalar(tag, value as f32), step);
    }

    /// Logs each `(name, value)` as `{prefix}/{name}`.
    pub fn scalars<'a>(
        &mut self,
        prefix: &str,
        values: impl IntoIterator<Item = (&'a str, f64)>,
        step: u64,
    ) {
        for (name, value) in values {
            self.scalar(&format!("{prefix}/{name}"), value, step);
        }
    }

    /// Logs an already encoded PNG image.
    pub fn png(&mut self, tag: &str, png: Vec<u8>, width: u32, height: u32, step: u64) {
        let mut image = Summary_Image::new();
        image.set_width(width as i32);
        image.set_height(height as i32);
        image.set_colorspace(3);
        image.set_encoded_image_string(png);
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_image(image);
        self.write_value(value, step);
    }

    /// Logs Markdown text (the TensorBoard text plugin), e.g. the resolved config.
    pub fn text(&mut self, tag: &str, markdown: &str, step: u64) {
        let mut plugin = SummaryMetadata_PluginData::new();
        plugin.set_plugin_name("text".to_string());
        let mut metadata = SummaryMetadata::new();
        metadata.set_plugin_data(plugin);
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        tensor.set_tensor_shape(TensorShapeProto::new());
        tensor.set_string_val(RepeatedField::from(vec![markdown.as_bytes().to_vec()]));
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_metadata(metadata);
        value.set_tensor(tensor);
        self.write_value(value, step);
    }

    /// Pushes buffered events to the file; returns the first write error of this writer, if
    /// any (then nothing was written since it).
    pub fn flush(&mut self) -> Result<(), TensorBoardError> {
        if self.error.is_none()
            && let Err(error) = self.writer.flush()
        {
            self.error = Some(error);
        }
        match &self.error {
            None => Ok(()),
            Some(error) => Err(TensorBoardError {
                path: self.path.clone(),
                source: std::io::Error::new(error.kind(), error.to_string()),
            }),
        }
    }

    fn write_value(&mut self, value: Summary_Value, step: u64) {
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from(vec![value]));
        self.write_summary(summary, step);
    }

    fn write_summary(&mut self, summary: Summary, step: u64) {
        let mut event = Event::new();
        event.set_wall_time(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        event.set_step(step as i64);
        event.set_summary(summary);
        self.write_event(&event);
    }

    fn write_event(&mut self, event: &Event) {
        if self.error.is_some() {
            return;
        }
        let result = event
            .write_to_bytes()
            .map_err(|error| std::io::Error::other(format!("encoding an event: {error}")))
            .and_then(|bytes| self.writer.write(&bytes));
        if let Err(error) = result {
            self.error = Some(error);
        }
    }
}

impl Drop for TensorBoard {
    fn drop(&mut self) {
        // Callers that care flush first and see the error; here there is no one to tell.
        let _ = self.flush();
    }
}

/// This machine's name for event file names (TensorFlow's convention), or `localhost`; only
/// characters safe in a file name are kept.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if name.is_empty() {
        "localhost".to_string()
    } else {
        name
    }
}

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarEvent {
    /// The tag, e.g. `loss/total`.
    pub tag: String,
    /// The step it was logged at.
    pub step: i64,
    /// The value.
    pub value: f32,
}

/// Reads every scalar from the event files (`events.out.tfevents.*`) directly in `dir`, in file
/// order; checks each record's length and framing (TFRecord) and parses the `Event` protobufs.
pub fn read_scalars(dir: &Path) -> Result<Vec<ScalarEvent>, EventFileError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EventFileError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.out.tfevents"))
        })
        .collect();
    files.sort();
    let mut parsed = Vec::with_capacity(files.len());
    for path in files {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let events = parse_records(&bytes, &path)?;
        parsed.push((
            events.first().map_or(f64::INFINITY, Event::get_wall_time),
            events,
        ));
    }
    // In the order they were started (file names order them only to the second); the sort is
    // stable, so files without a time keep their name order.
    parsed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut scalars = Vec::new();
    for (_, events) in parsed {
        for event in events {
            if !event.has_summary() {
                continue;
            }
            for value in event.get_summary().get_value() {
                if value.has_simple_value() {
                    scalars.push(ScalarEvent {
                        tag: value.get_tag().to_string(),
                        step: event.get_step(),
                        value: value.get_simple_value(),
                    });
                }
            }
        }
    }
    Ok(scalars)
}

/// TFRecord framing: `u64 length, u32 masked crc(length), data, u32 masked crc(data)`.
fn parse_records(bytes: &[u8], path: &Path) -> Result<Vec<Event>, EventFileError> {
    let mut events = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let corrupt = |reason: String| EventFileError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        if bytes.len() - offset < 12 {
            return Err(corrupt(format!(
                "{} trailing bytes are too few for a record header",
                bytes.len() - offset
            )));
        }
        let length =
            u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes")) as usize;
        let data_start = offset + 12;
        let Some(data_end) = data_start
            .checked_add(length)
            .filter(|&end| end + 4 <= bytes.len())
        else {
            return Err(corrupt(format!(
                "record of {length} bytes runs past the end of the file"
            )));
        };
        let event = Event::parse_from_bytes(&bytes[data_start..data_end])
            .map_err(|error| corrupt(format!("not an Event protobuf: {error}")))?;
        events.push(event);
        offset = data_end + 4;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_scalars_read_back_with_tags_and_steps() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut tb = TensorBoard::create(dir.path()).expect("create");
            tb.scalar("loss/total", 1.5, 1);
            tb.scalars("eval", [("nll", -0.25), ("rmse", 0.125)], 2);
            tb.text("config", "(env: \"cartpole\")", 0);
            tb.flush().expect("flush");
        }
        let scalars = read_scalars(dir.path()).expect("read back");
        let summary: Vec<(String, i64, f32)> = scalars
            .into_iter()
            .map(|s| (s.tag, s.step, s.value))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("loss/total".into(), 1, 1.5),
                ("eval/nll".into(), 2, -0.25),
                ("eval/rmse".into(), 2, 0.125)
            ]
        );
    }

    #[test]
    fn writers_started_in_the_same_second_never_share_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut first = TensorBoard::create(dir.path()).expect("create");
        let mut second = TensorBoard::create(dir.path()).expect("create in the same second");
        assert_ne!(first.path(), second.path());
        first.scalar("loss/total", 1.0, 1);
        second.scalar("loss/total", 2.0, 2);
        first.flush().expect("flush");
        second.flush().expect("flush");
        let name = first
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8")
            .to_string();
        assert!(
            name.starts_with("events.out.tfevents.")
                && name.ends_with(&format!(".{}.0", std::process::id())),
            "{name}"
        );
        drop((first, second));
        let values: Vec<(i64, f32)> = read_scalars(dir.path())
            .expect("read")
            .into_iter()
            .map(|s| (s.step, s.value))
            .collect();
        assert_eq!(
            values,
            vec![(1, 1.0), (2, 2.0)],
            "both files kept, read in the order they were started"
        );
    }

    /// `/dev/full` fails every write with "No space left on device", like a full disk.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_write_error_comes_back_from_flush_and_later_events_are_dropped() {
        let full = File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full exists on Linux");
        let mut tb = TensorBoard::from_file(full, PathBuf::from("/dev/full"));
        tb.scalar("loss/total", 1.0, 1);
        let error = tb.flush().expect_err("the disk is full");
        assert_eq!(
            error.source.kind(),
            std::io::ErrorKind::StorageFull,
            "ENOSPC: {error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("cannot write TensorBoard event file /dev/full")
                && message.contains("No space left"),
            "{message}"
        );
        // Later writes neither panic nor clear the error.
        tb.scalars("eval", [("nll", 1.0)], 2);
        assert!(tb.flush().is_err());
    }

    #[test]
    fn truncated_event_file_is_reported_with_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut tb = TensorBoard::create(dir.path()).expect("create");
            tb.scalar("loss/total", 1.5, 1);
            tb.flush().expect("flush");
        }
        let file = std::fs::read_dir(dir.path())
            .expect("dir")
            .next()
            .expect("one file")
            .expect("entry")
            .path();
        let bytes = std::fs::read(&file).expect("read");
        std::fs::write(&file, &bytes[..bytes.len() - 3]).expect("write");
        let message = read_scalars(dir.path()).unwrap_err().to_string();
        assert!(message.contains("corrupt at byte"), "{message}");
    }
}
