//! TensorBoard scalars for any Rust program: an event file that TensorBoard
//! reads as it is (`events.out.tfevents.<time>.<host>`), written as
//! TensorFlow's `EventsWriter` writes it.
//!
//! The file is a sequence of TFRecords (length, masked CRC-32C of the
//! length, the bytes, masked CRC-32C of the bytes) each holding a
//! `tensorflow.Event` protobuf; the first announces the file version, the
//! rest each carry one scalar `Summary.Value`. A tag's first value carries
//! its description (greentrain puts an energy figure's provenance there),
//! which TensorBoard shows beside the chart.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let mut w = greentrain_tensorboard::EventWriter::create(dir.path(), "host").unwrap();
//! w.scalar("train/loss", 1, 0.5, None).unwrap();
//! w.scalar("energy/joules", 1, 1234.0, Some("measured: RAPL package counter")).unwrap();
//! w.flush().unwrap();
//! ```

use prost::Message;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `tensorflow.Event` (the fields a scalar file uses).
#[derive(Clone, PartialEq, Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<Value>,
}

/// `tensorflow.Summary.Value` with `simple_value` (a scalar).
#[derive(Clone, PartialEq, Message)]
struct Value {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
    #[prost(message, optional, tag = "9")]
    metadata: Option<SummaryMetadata>,
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, Message)]
struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    plugin_data: Option<PluginData>,
    #[prost(string, tag = "2")]
    display_name: String,
    #[prost(string, tag = "3")]
    summary_description: String,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, Message)]
struct PluginData {
    #[prost(string, tag = "1")]
    plugin_name: String,
}

/// TFRecord's checksum: CRC-32C, rotated and offset so that a CRC of data
/// holding CRCs is not degenerate.
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One event file, appended to as values arrive.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
    described: HashSet<String>,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<unix seconds>.<host>` (a new file:
    /// an existing one is never overwritten) and writes its version record.
    pub fn create(dir: &Path, host: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let now = unix_now();
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut n = 0;
        let (path, file) = loop {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!(".{n}")
            };
            let path = dir.join(format!("events.out.tfevents.{}.{host}{suffix}", now as u64));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e),
            }
        };
        let mut w = Self {
            path,
            out: BufWriter::new(file),
            described: HashSet::new(),
        };
        w.record(&Event {
            wall_time: now,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        Ok(w)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `value` for `tag` at `step`; `description` is kept with the
    /// tag's first value (TensorBoard reads it from there). A non-finite
    /// value is written as it is: TensorBoard shows NaN and inf.
    pub fn scalar(
        &mut self,
        tag: &str,
        step: i64,
        value: f32,
        description: Option<&str>,
    ) -> std::io::Result<()> {
        let metadata = self
            .described
            .insert(tag.to_string())
            .then(|| SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "scalars".into(),
                }),
                display_name: String::new(),
                summary_description: description.unwrap_or_default().to_string(),
            });
        self.record(&Event {
            wall_time: unix_now(),
            step,
            file_version: None,
            summary: Some(Summary {
                value: vec![Value {
                    tag: tag.to_string(),
                    simple_value: Some(value),
                    metadata,
                }],
            }),
        })
    }

    /// Pushes what is buffered to the file (at each log step and epoch end,
    /// so that a live TensorBoard sees it).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn record(&mut self, e: &Event) -> std::io::Result<()> {
        let data = e.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(&data)?;
        self.out.write_all(&masked_crc(&data).to_le_bytes())
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TensorFlow's own test vector for the masked CRC of the record
    /// length 0 is not published; CRC-32C's check value is: "123456789".
    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn records_frame_and_decode_back() {
        let d = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(d.path(), "test host").unwrap();
        w.scalar("a/b", 3, 1.5, Some("why")).unwrap();
        w.scalar("a/b", 4, 2.5, Some("ignored")).unwrap();
        w.flush().unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("events.out.tfevents.") && name.ends_with(".test_host"),
            "{name}"
        );
        let bytes = std::fs::read(w.path()).unwrap();
        let mut events = vec![];
        let mut at = 0;
        while at < bytes.len() {
            let len_bytes = &bytes[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(len_bytes));
            let data = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            events.push(Event::decode(data).unwrap());
            at += 16 + len;
        }
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let v = &events[1].summary.as_ref().unwrap().value[0];
        assert_eq!(
            (v.tag.as_str(), v.simple_value, events[1].step),
            ("a/b", Some(1.5), 3)
        );
        assert_eq!(v.metadata.as_ref().unwrap().summary_description, "why");
        let v = &events[2].summary.as_ref().unwrap().value[0];
        assert!(
            v.metadata.is_none(),
            "the description goes with the first value only"
        );
    }
}
