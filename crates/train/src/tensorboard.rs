//! TensorBoard event files: writing (through tensorboard-rs) and reading back (for tests and for
//! `wm` itself, which checks what it wrote).
//!
//! Tags are namespaced: `loss/*` for the loss terms, `eval/*` for held-out metrics, `perf/*` for
//! throughput, `config` (text) for the hyperparameters, logged once.

use std::path::{Path, PathBuf};

use protobuf::{Message, RepeatedField};
use tensorboard_proto::event::Event;
use tensorboard_proto::summary::{Summary, Summary_Image, Summary_Value, SummaryMetadata, SummaryMetadata_PluginData};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::TensorShapeProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::summary_writer::FileWriter;

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

/// Writes scalars, images and text to one event file in a run folder.
pub struct TensorBoard {
    writer: FileWriter,
}

impl TensorBoard {
    /// Opens a new event file in `dir` (created if missing).
    pub fn create(dir: &Path) -> Result<Self, std::io::Error> {
        // tensorboard-rs panics where it cannot create the folder; create it first to get an error.
        std::fs::create_dir_all(dir)?;
        Ok(Self { writer: FileWriter::new(dir) })
    }

    /// Logs one scalar.
    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.writer.add_summary(tensorboard_rs::summary::scalar(tag, value as f32), step as usize);
    }

    /// Logs each `(name, value)` as `{prefix}/{name}`.
    pub fn scalars<'a>(&mut self, prefix: &str, values: impl IntoIterator<Item = (&'a str, f64)>, step: u64) {
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

    /// Pushes buffered events to the file.
    pub fn flush(&mut self) {
        self.writer.flush();
    }

    fn write_value(&mut self, value: Summary_Value, step: u64) {
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from(vec![value]));
        self.writer.add_summary(summary, step as usize);
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
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("events.out.tfevents")))
        .collect();
    files.sort();
    let mut scalars = Vec::new();
    for path in files {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        for event in parse_records(&bytes, &path)? {
            if !event.has_summary() {
                continue;
            }
            for value in event.get_summary().get_value() {
                if value.has_simple_value() {
                    scalars.push(ScalarEvent { tag: value.get_tag().to_string(), step: event.get_step(), value: value.get_simple_value() });
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
        let corrupt = |reason: String| EventFileError::Corrupt { path: path.to_path_buf(), offset, reason };
        if bytes.len() - offset < 12 {
            return Err(corrupt(format!("{} trailing bytes are too few for a record header", bytes.len() - offset)));
        }
        let length = u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes")) as usize;
        let data_start = offset + 12;
        let Some(data_end) = data_start.checked_add(length).filter(|&end| end + 4 <= bytes.len()) else {
            return Err(corrupt(format!("record of {length} bytes runs past the end of the file")));
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
            tb.flush();
        }
        let scalars = read_scalars(dir.path()).expect("read back");
        let summary: Vec<(String, i64, f32)> = scalars.into_iter().map(|s| (s.tag, s.step, s.value)).collect();
        assert_eq!(
            summary,
            vec![("loss/total".into(), 1, 1.5), ("eval/nll".into(), 2, -0.25), ("eval/rmse".into(), 2, 0.125)]
        );
    }

    #[test]
    fn truncated_event_file_is_reported_with_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut tb = TensorBoard::create(dir.path()).expect("create");
            tb.scalar("loss/total", 1.5, 1);
            tb.flush();
        }
        let file = std::fs::read_dir(dir.path()).expect("dir").next().expect("one file").expect("entry").path();
        let bytes = std::fs::read(&file).expect("read");
        std::fs::write(&file, &bytes[..bytes.len() - 3]).expect("write");
        let message = read_scalars(dir.path()).unwrap_err().to_string();
        assert!(message.contains("corrupt at byte"), "{message}");
    }
}
