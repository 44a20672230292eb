//! The file format of a partition's archive: records in zstd frames, each
//! frame behind a short header that says where it starts, so a damaged
//! frame is named by its offsets, and the file's SHA-256 in the manifest.
//!
//! ```text
//! file   = MAGIC frame* end
//! frame  = u32 compressed_len, u32 plain_len, u32 records, i64 first_offset,
//!          zstd frame (with its content checksum) of `records` records
//! end    = u32 0, u32 0, u32 0, i64 -1
//! record = i64 offset, i64 timestamp_ms (i64::MIN: none),
//!          i32 key_len (-1: none), key, i32 value_len (-1: none), value,
//!          u16 headers, { u16 name_len, name, i32 value_len (-1: none), value }*
//! ```
//!
//! Integers are little-endian. Every frame is a standard zstd frame: `zstd
//! -d` reads one once its 20-byte header is cut off.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};

/// The first bytes of every archive file.
pub(crate) const MAGIC: &[u8; 8] = b"VIGIEAR1";

/// Records per frame: a damaged frame loses the naming of at most this many.
const FRAME_RECORDS: usize = 4096;
/// ...or uncompressed bytes per frame, whichever comes first.
const FRAME_BYTES: usize = 4 << 20;
/// Largest record archived, in bytes (Kafka's default limit is 1 MiB).
const MAX_RECORD_BYTES: usize = 64 << 20;
/// Bytes of a frame header.
const HEADER_BYTES: usize = 20;

/// One archived record, owned (the tests' records).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArchivedRecord {
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What a finished file holds, for the manifest.
#[derive(Debug, Clone, Default)]
pub(crate) struct Written {
    pub(crate) records: u64,
    pub(crate) first_offset: Option<i64>,
    pub(crate) last_offset: Option<i64>,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

/// One partition's frame being filled, and what its file holds so far.
#[derive(Debug)]
struct Frame {
    plain: Vec<u8>,
    records: u32,
    first: i64,
    written: Written,
}

/// A full frame on its way to the thread that compresses and writes.
#[derive(Debug)]
struct Job {
    partition: i32,
    plain: Vec<u8>,
    records: u32,
    first: i64,
}

/// A file being written, and its running SHA-256.
struct FileOut {
    path: PathBuf,
    out: BufWriter<File>,
    hash: Sha256,
    bytes: u64,
}

impl FileOut {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut f = Self {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            bytes: 0,
        };
        f.emit(MAGIC)?;
        Ok(f)
    }

    fn emit(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn frame(&mut self, header: [u8; HEADER_BYTES], data: &[u8]) -> anyhow::Result<()> {
        self.emit(&header)?;
        self.emit(data)
    }

    /// The end mark, then the file synced: its size and SHA-256.
    fn finish(mut self) -> anyhow::Result<(u64, String)> {
        self.emit(&frame_header(0, 0, 0, -1))?;
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.out
            .get_ref()
            .sync_all()
            .with_context(|| format!("cannot sync {}", self.path.display()))?;
        Ok((self.bytes, hex(&self.hash.finalize())))
    }
}

fn frame_header(compressed: u32, plain: u32, records: u32, first: i64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..4].copy_from_slice(&compressed.to_le_bytes());
    h[4..8].copy_from_slice(&plain.to_le_bytes());
    h[8..12].copy_from_slice(&records.to_le_bytes());
    h[12..20].copy_from_slice(&first.to_le_bytes());
    h
}

/// Each file's size and SHA-256, by partition.
type Sizes = BTreeMap<i32, (u64, String)>;

/// Frames in the queue to the writing thread, at most.
const QUEUED_FRAMES: usize = 8;

/// Writes an archive's files, one per partition: records are encoded into
/// their partition's frame on the caller's thread, and full frames are
/// compressed, hashed and written on a thread of their own, so reading
/// from Kafka and compressing overlap.
pub(crate) struct Writer {
    frames: BTreeMap<i32, Frame>,
    jobs: Option<SyncSender<Job>>,
    spare: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<anyhow::Result<Sizes>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("partitions", &self.frames.len())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Creates each partition's file (none may exist) at zstd `level`.
    pub(crate) fn create(files: &BTreeMap<i32, PathBuf>, level: i32) -> anyhow::Result<Self> {
        let mut outs = BTreeMap::new();
        for (&p, path) in files {
            outs.insert(p, FileOut::create(path)?);
        }
        let mut compressor =
            zstd::bulk::Compressor::new(level).with_context(|| format!("zstd level {level}"))?;
        compressor.include_checksum(true)?;
        let (jobs, queue) = sync_channel::<Job>(QUEUED_FRAMES);
        let (give_back, spare) = sync_channel::<Vec<u8>>(QUEUED_FRAMES + 2);
        let worker = std::thread::Builder::new()
            .name("vigie-archive-write".into())
            .spawn(move || {
                let mut compressed = Vec::new();
                for mut job in queue {
                    let out = outs.get_mut(&job.partition).expect("a created file");
                    compressed.clear();
                    compressed.reserve(zstd::zstd_safe::compress_bound(job.plain.len()));
                    compressor
                        .compress_to_buffer(&job.plain, &mut compressed)
                        .context("zstd compression")?;
                    out.frame(
                        frame_header(
                            compressed.len() as u32,
                            job.plain.len() as u32,
                            job.records,
                            job.first,
                        ),
                        &compressed,
                    )?;
                    job.plain.clear();
                    let _ = give_back.try_send(job.plain);
                }
                let mut done = BTreeMap::new();
                for (p, out) in outs {
                    done.insert(p, out.finish()?);
                }
                Ok(done)
            })
            .context("cannot start the archive's writing thread")?;
        Ok(Self {
            frames: files
                .keys()
                .map(|&p| {
                    (
                        p,
                        Frame {
                            plain: Vec::new(),
                            records: 0,
                            first: 0,
                            written: Written::default(),
                        },
                    )
                })
                .collect(),
            jobs: Some(jobs),
            spare,
            worker: Some(worker),
        })
    }

    /// Appends one record to `partition`'s file.
    pub(crate) fn push<'h>(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> anyhow::Result<()> {
        let f = self
            .frames
            .get_mut(&partition)
            .with_context(|| format!("partition {partition} has no file"))?;
        if f.records == 0 {
            f.first = offset;
            if f.plain.capacity() == 0 {
                f.plain = self
                    .spare
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(FRAME_BYTES + (64 << 10)));
            }
        }
        let b = &mut f.plain;
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&timestamp_ms.unwrap_or(i64::MIN).to_le_bytes());
        put_bytes(b, key);
        put_bytes(b, value);
        let count_at = b.len();
        b.extend_from_slice(&0u16.to_le_bytes());
        let mut count = 0u16;
        for (name, v) in headers {
            let n = u16::try_from(name.len()).context("a header name over 64 KiB")?;
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            put_bytes(b, v);
            count = count.checked_add(1).context("over 65,535 headers")?;
        }
        b[count_at..count_at + 2].copy_from_slice(&count.to_le_bytes());
        // What a reader accepts in one frame.
        ensure!(
            b.len() <= FRAME_BYTES + MAX_RECORD_BYTES,
            "the record at offset {offset} of partition {partition} is over {} MiB",
            MAX_RECORD_BYTES >> 20
        );
        f.records += 1;
        f.written.records += 1;
        f.written.first_offset.get_or_insert(offset);
        f.written.last_offset = Some(offset);
        if f.records as usize >= FRAME_RECORDS || f.plain.len() >= FRAME_BYTES {
            self.send(partition)?;
        }
        Ok(())
    }

    fn send(&mut self, partition: i32) -> anyhow::Result<()> {
        let f = self.frames.get_mut(&partition).expect("a known partition");
        if f.records == 0 {
            return Ok(());
        }
        let job = Job {
            partition,
            plain: std::mem::take(&mut f.plain),
            records: std::mem::take(&mut f.records),
            first: f.first,
        };
        let sent = self.jobs.as_ref().expect("open until finished").send(job);
        if sent.is_err() {
            // The writing thread stopped: its error says why.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("the archive's writing thread stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> anyhow::Result<Sizes> {
        self.jobs = None;
        match self.worker.take() {
            Some(w) => w
                .join()
                .map_err(|_| anyhow::anyhow!("the archive's writing thread panicked"))?,
            None => bail!("the archive's writing thread already stopped"),
        }
    }

    /// Writes the last frames and the end marks, syncs the files: what
    /// each holds.
    pub(crate) fn finish(mut self) -> anyhow::Result<BTreeMap<i32, Written>> {
        let partitions: Vec<i32> = self.frames.keys().copied().collect();
        for p in partitions {
            self.send(p)?;
        }
        let files = self.join()?;
        Ok(std::mem::take(&mut self.frames)
            .into_iter()
            .map(|(p, f)| {
                let (bytes, sha256) = files[&p].clone();
                (
                    p,
                    Written {
                        bytes,
                        sha256,
                        ..f.written
                    },
                )
            })
            .collect())
    }
}

fn put_bytes(b: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => b.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(v) => {
            b.extend_from_slice(&(v.len() as i32).to_le_bytes());
            b.extend_from_slice(v);
        }
    }
}

/// Lower-case hexadecimal of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The SHA-256 and size of a file.
pub(crate) fn file_sha256(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex(&hash.finalize()), bytes))
}

/// One archived record, borrowed from its reader's frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// Reads one partition's records back, a frame at a time.
pub(crate) struct Reader {
    path: PathBuf,
    input: BufReader<File>,
    decompressor: zstd::bulk::Decompressor<'static>,
    compressed: Vec<u8>,
    /// The frame read, decompressed; `pos` the next record in it.
    plain: Vec<u8>,
    pos: usize,
    /// Records left in the frame.
    left: u32,
    frame_first: i64,
    /// The last record handed out, for the errors.
    last_offset: Option<i64>,
    done: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens `path` and checks its first bytes.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .ok()
            .filter(|()| &magic == MAGIC)
            .with_context(|| format!("{}: not a Vigie archive file", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            input,
            decompressor: zstd::bulk::Decompressor::new()?,
            compressed: Vec::new(),
            plain: Vec::new(),
            pos: 0,
            left: 0,
            frame_first: 0,
            last_offset: None,
            done: false,
        })
    }

    fn where_(&self) -> String {
        match self.last_offset {
            Some(o) => format!("{}: after offset {o}", self.path.display()),
            None => format!("{}: before its first record", self.path.display()),
        }
    }

    /// The next record, or `None` after the last one.
    pub(crate) fn next_record(&mut self) -> anyhow::Result<Option<RecordRef<'_>>> {
        while self.left == 0 {
            if self.done {
                return Ok(None);
            }
            self.read_frame()?;
        }
        let mut b = &self.plain[self.pos..];
        let before = b.len();
        let r = decode(&mut b).with_context(|| {
            format!(
                "{}: frame of records from offset {}: corrupt records",
                self.where_(),
                self.frame_first
            )
        })?;
        if let Some(prev) = self.last_offset {
            ensure!(
                r.offset > prev,
                "{}: offset {} after {prev}",
                self.path.display(),
                r.offset
            );
        }
        self.left -= 1;
        if self.left == 0 {
            ensure!(
                b.is_empty(),
                "{}: frame of records from offset {}: {} bytes after its last record",
                self.path.display(),
                self.frame_first,
                b.len()
            );
        }
        self.pos += before - b.len();
        self.last_offset = Some(r.offset);
        Ok(Some(r))
    }

    fn read_frame(&mut self) -> anyhow::Result<()> {
        let mut header = [0u8; HEADER_BYTES];
        self.input
            .read_exact(&mut header)
            .with_context(|| format!("{}: the file is cut short", self.where_()))?;
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (clen, plen, records) = (word(0), word(4), word(8));
        let first = i64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        if clen == 0 && records == 0 && first == -1 {
            self.done = true;
            let mut rest = [0u8; 1];
            ensure!(
                matches!(self.input.read(&mut rest), Ok(0)),
                "{}: bytes after the end mark",
                self.path.display()
            );
            return Ok(());
        }
        let frame = format!(
            "{}: frame of {records} records from offset {first}",
            self.path.display()
        );
        ensure!(
            plen as usize <= FRAME_BYTES + MAX_RECORD_BYTES && clen > 0 && records > 0,
            "{frame}: corrupt frame header ({})",
            self.where_()
        );
        self.compressed.resize(clen as usize, 0);
        self.input
            .read_exact(&mut self.compressed)
            .with_context(|| format!("{frame}: the file is cut short"))?;
        self.plain.clear();
        self.plain.reserve(plen as usize);
        self.decompressor
            .decompress_to_buffer(&self.compressed, &mut self.plain)
            .with_context(|| format!("{frame}: corrupt data ({})", self.where_()))?;
        ensure!(
            self.plain.len() == plen as usize,
            "{frame}: {} bytes decompressed, its header says {plen}",
            self.plain.len()
        );
        ensure!(
            self.plain
                .get(..8)
                .map(|o| i64::from_le_bytes(o.try_into().expect("8 bytes")))
                == Some(first),
            "{frame}: its first record has another offset"
        );
        self.pos = 0;
        self.left = records;
        self.frame_first = first;
        Ok(())
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
    ensure!(b.len() >= n, "cut short");
    let (head, tail) = b.split_at(n);
    *b = tail;
    Ok(head)
}

fn int<const N: usize>(b: &mut &[u8]) -> anyhow::Result<[u8; N]> {
    Ok(take(b, N)?.try_into().expect("N bytes"))
}

fn bytes<'a>(b: &mut &'a [u8]) -> anyhow::Result<Option<&'a [u8]>> {
    let n = i32::from_le_bytes(int(b)?);
    if n == -1 {
        return Ok(None);
    }
    ensure!(n >= 0, "a negative length");
    Ok(Some(take(b, n as usize)?))
}

/// One record from the front of `b`, which moves past it.
fn decode<'a>(b: &mut &'a [u8]) -> anyhow::Result<RecordRef<'a>> {
    let offset = i64::from_le_bytes(int(b)?);
    let ts = i64::from_le_bytes(int(b)?);
    let key = bytes(b)?;
    let value = bytes(b)?;
    let count = u16::from_le_bytes(int(b)?);
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = u16::from_le_bytes(int(b)?) as usize;
        let name = std::str::from_utf8(take(b, n)?).context("a header name that is not UTF-8")?;
        headers.push((name, bytes(b)?));
    }
    Ok(RecordRef {
        offset,
        timestamp_ms: (ts != i64::MIN).then_some(ts),
        key,
        value,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: i64) -> Vec<ArchivedRecord> {
        (0..n)
            .map(|i| ArchivedRecord {
                offset: 3 * i + 7,
                timestamp_ms: (i % 5 != 0).then_some(1_700_000_000_000 + i),
                key: (i % 3 != 0).then(|| format!("k{i}").into_bytes()),
                value: (i % 7 != 0).then(|| vec![(i % 251) as u8; (i % 300) as usize]),
                headers: (0..i % 3)
                    .map(|h| (format!("h{h}"), (h != 1).then(|| vec![h as u8; 3])))
                    .collect(),
            })
            .collect()
    }

    fn write(path: &Path, records: &[ArchivedRecord]) -> Written {
        let mut w = Writer::create(&BTreeMap::from([(0, path.to_owned())]), 3).unwrap();
        for r in records {
            w.push(
                0,
                r.offset,
                r.timestamp_ms,
                r.key.as_deref(),
                r.value.as_deref(),
                r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            )
            .unwrap();
        }
        w.finish().unwrap().remove(&0).unwrap()
    }

    fn read_all(path: &Path) -> anyhow::Result<Vec<ArchivedRecord>> {
        let mut r = Reader::open(path)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(ArchivedRecord {
                offset: rec.offset,
                timestamp_ms: rec.timestamp_ms,
                key: rec.key.map(<[u8]>::to_vec),
                value: rec.value.map(<[u8]>::to_vec),
                headers: rec
                    .headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.map(<[u8]>::to_vec)))
                    .collect(),
            });
        }
        Ok(out)
    }

    #[test]
    fn records_round_trip_across_frames_with_absent_keys_values_and_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0");
        let records = sample(10_000);
        let written = write(&path, &records);
        assert_eq!(written.records, 10_000);
        assert_eq!(written.first_offset, Some(7));
        assert_eq!(written.last_offset, Some(3 * 9_999 + 7));
        assert_eq!(file_sha256(&path).unwrap(), (written.sha256, written.bytes));
        assert_eq!(read_all(&path).unwrap(), records);
    }

    #[test]
    fn an_empty_file_reads_back_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0");
        assert_eq!(write(&path, &[]).records, 0);
        assert!(read_all(&path).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_byte_is_named_by_its_frame_and_the_last_good_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0");
        let records = sample(10_000);
        write(&path, &records);
        let mut bytes = std::fs::read(&path).unwrap();
        // Into the second frame's compressed data.
        let first_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let second = 8 + HEADER_BYTES + first_len;
        bytes[second + HEADER_BYTES + 40] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let e = format!("{:#}", read_all(&path).unwrap_err());
        let second_first = records[FRAME_RECORDS].offset;
        assert!(
            e.contains(&format!("records from offset {second_first}")),
            "{e}"
        );
        assert!(e.contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn a_file_cut_short_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p0");
        write(&path, &sample(5_000));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();
        let e = format!("{:#}", read_all(&path).unwrap_err());
        assert!(e.contains("cut short"), "{e}");
    }
}
