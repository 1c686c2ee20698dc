//! The report of rejected rows: `line,code,message`, one row per rejected input row, in line
//! order, written and synced before the batch it belongs to commits.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader};
use std::path::Path;

use csv::ByteRecord;

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejection {
    /// The physical line the row starts on; the header is line 1.
    pub line: u64,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug)]
pub(super) struct Report {
    writer: csv::Writer<File>,
    note: Option<String>,
}

impl Report {
    /// Opens the report of an import. A new import (nothing committed yet) starts it afresh.
    /// A resumed one keeps the rows up to `last_line`, the last committed row, and drops any
    /// after it: those belong to a batch that was written but never committed, and will be
    /// written again when that batch is redone.
    pub(super) fn resume(path: &Path, last_line: Option<u64>, resuming: bool) -> io::Result<Self> {
        let mut note = None;
        let fresh = match (resuming, path.exists()) {
            (false, _) => true,
            (true, true) => !cut_after(path, last_line.unwrap_or(0))?,
            (true, false) => {
                note = Some(format!(
                    "the report {} of the earlier runs is gone; it starts again, without their rejected rows",
                    path.display()
                ));
                true
            }
        };
        let file = if fresh {
            File::create(path)?
        } else {
            OpenOptions::new().append(true).open(path)?
        };
        let mut writer = csv::WriterBuilder::new().from_writer(file);
        if fresh {
            writer.write_record(["line", "code", "message"])?;
            writer.flush()?;
        }
        Ok(Self { writer, note })
    }

    /// Something the operator should know about the report, once.
    pub(super) fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Appends a batch's rejections and syncs them to disk.
    pub(super) fn write(&mut self, rejections: &[Rejection]) -> io::Result<()> {
        if rejections.is_empty() {
            return Ok(());
        }
        for r in rejections {
            let line = r.line.to_string();
            self.writer
                .write_record([line.as_str(), r.code, r.message.as_str()])?;
        }
        self.writer.flush()?;
        self.writer.get_ref().sync_data()
    }
}

/// Truncates the report after its last row whose line is at most `last_line`. Rows are in
/// increasing line order, so the first one that is not (past `last_line`, unreadable, or out
/// of order, as a row half-written by a crash may be) starts the cut. `false` if the file has
/// no readable header, and must be started afresh.
fn cut_after(path: &Path, last_line: u64) -> io::Result<bool> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(BufReader::new(&file));
    match reader.byte_headers() {
        Ok(header) if header.iter().next() == Some(b"line".as_slice()) => {}
        _ => return Ok(false),
    }
    let mut record = ByteRecord::new();
    let mut previous = 0;
    let cut = loop {
        let start = reader.position().byte();
        match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(true),
            Ok(true) => {
                let line = std::str::from_utf8(&record[0])
                    .ok()
                    .and_then(|l| l.parse::<u64>().ok());
                match line {
                    Some(line) if line > previous && line <= last_line && record.len() == 3 => {
                        previous = line;
                    }
                    _ => break start,
                }
            }
            Err(_) => break start,
        }
    };
    drop(reader);
    file.set_len(cut)?;
    file.sync_data()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(line: u64) -> Rejection {
        Rejection {
            line,
            code: "invalid_url",
            message: format!("row {line}, with a comma, and \"quotes\""),
        }
    }

    fn lines(path: &Path) -> Vec<u64> {
        let mut reader = csv::Reader::from_path(path).expect("readable");
        reader
            .records()
            .map(|r| r.expect("a row")[0].parse().expect("a number"))
            .collect()
    }

    #[test]
    fn a_resumed_report_keeps_committed_rows_and_drops_the_rest() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("report.csv");
        let mut report = Report::resume(&path, None, false).expect("new");
        report.write(&[rejection(3), rejection(7)]).expect("write");
        report
            .write(&[rejection(12), rejection(15)])
            .expect("write");
        drop(report);

        // Rows up to line 10 committed; the batch with 12 and 15 did not.
        let mut resumed = Report::resume(&path, Some(10), true).expect("resume");
        resumed.write(&[rejection(12)]).expect("write");

        assert_eq!(lines(&path), [3, 7, 12]);
        assert_eq!(resumed.note(), None);
    }

    #[test]
    fn a_half_written_last_row_is_dropped() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("report.csv");
        std::fs::write(
            &path,
            "line,code,message\n3,invalid_url,x\n7,invalid_url,y\n1",
        )
        .expect("write");

        Report::resume(&path, Some(100), true).expect("resume");

        assert_eq!(lines(&path), [3, 7]);
    }

    #[test]
    fn a_missing_report_on_resume_starts_again_and_says_so() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("gone.csv");

        let report = Report::resume(&path, Some(10), true).expect("resume");

        assert!(report.note().is_some_and(|n| n.contains("gone")));
        assert_eq!(lines(&path), Vec::<u64>::new());
    }
}
