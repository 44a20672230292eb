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

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};

/// The first bytes of every archive file.
pub(crate) const MAGIC: &[u8; 8] = b"VIGIEAR1";

/// Records per frame: a damaged frame loses the naming of at most this many.
const FRAME_RECORDS: usize = 4096;
/// ...or uncompressed bytes per frame, whichever comes first.
const FRAME_BYTES: usize = 4 << 20;
/// Bytes of a frame header.
const HEADER_BYTES: usize = 20;

/// One archived record, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArchivedRecord {
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What a finished file holds, for the manifest.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub(crate) records: u64,
    pub(crate) first_offset: Option<i64>,
    pub(crate) last_offset: Option<i64>,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
}

/// Writes one partition's records to a file, a frame at a time.
pub(crate) struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    hash: Sha256,
    bytes: u64,
    compressor: zstd::bulk::Compressor<'static>,
    plain: Vec<u8>,
    compressed: Vec<u8>,
    in_frame: u32,
    frame_first: i64,
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Creates `path` (which must not exist) at zstd `level`.
    pub(crate) fn create(path: &Path, level: i32) -> anyhow::Result<Self> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut compressor =
            zstd::bulk::Compressor::new(level).with_context(|| format!("zstd level {level}"))?;
        compressor.include_checksum(true)?;
        let mut w = Self {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            bytes: 0,
            compressor,
            plain: Vec::with_capacity(FRAME_BYTES + (64 << 10)),
            compressed: Vec::new(),
            in_frame: 0,
            frame_first: 0,
            records: 0,
            first_offset: None,
            last_offset: None,
        };
        w.emit(MAGIC)?;
        Ok(w)
    }

    fn emit(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Appends one record.
    pub(crate) fn push<'h>(
        &mut self,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) -> anyhow::Result<()> {
        if self.in_frame == 0 {
            self.frame_first = offset;
        }
        let b = &mut self.plain;
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
        self.in_frame += 1;
        self.records += 1;
        self.first_offset.get_or_insert(offset);
        self.last_offset = Some(offset);
        if self.in_frame as usize >= FRAME_RECORDS || self.plain.len() >= FRAME_BYTES {
            self.flush_frame()?;
        }
        Ok(())
    }

    fn flush_frame(&mut self) -> anyhow::Result<()> {
        if self.in_frame == 0 {
            return Ok(());
        }
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(self.plain.len()));
        self.compressor
            .compress_to_buffer(&self.plain, &mut self.compressed)
            .context("zstd compression")?;
        let mut header = [0u8; HEADER_BYTES];
        header[0..4].copy_from_slice(&(self.compressed.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&(self.plain.len() as u32).to_le_bytes());
        header[8..12].copy_from_slice(&self.in_frame.to_le_bytes());
        header[12..20].copy_from_slice(&self.frame_first.to_le_bytes());
        self.emit(&header)?;
        let compressed = std::mem::take(&mut self.compressed);
        self.emit(&compressed)?;
        self.compressed = compressed;
        self.plain.clear();
        self.in_frame = 0;
        Ok(())
    }

    /// Writes the last frame and the end mark, syncs the file.
    pub(crate) fn finish(mut self) -> anyhow::Result<Written> {
        self.flush_frame()?;
        let mut end = [0u8; HEADER_BYTES];
        end[12..20].copy_from_slice(&(-1i64).to_le_bytes());
        self.emit(&end)?;
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.out
            .get_ref()
            .sync_all()
            .with_context(|| format!("cannot sync {}", self.path.display()))?;
        Ok(Written {
            records: self.records,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            bytes: self.bytes,
            sha256: hex(&self.hash.finalize()),
        })
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

/// Reads one partition's records back, a frame at a time.
pub(crate) struct Reader {
    path: PathBuf,
    input: BufReader<File>,
    decompressor: zstd::bulk::Decompressor<'static>,
    compressed: Vec<u8>,
    frame: std::vec::IntoIter<ArchivedRecord>,
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
            frame: Vec::new().into_iter(),
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
    pub(crate) fn next_record(&mut self) -> anyhow::Result<Option<ArchivedRecord>> {
        loop {
            if let Some(r) = self.frame.next() {
                self.last_offset = Some(r.offset);
                return Ok(Some(r));
            }
            if self.done {
                return Ok(None);
            }
            self.read_frame()?;
        }
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
            plen as usize <= FRAME_BYTES + (64 << 20) && clen > 0 && records > 0,
            "{frame}: corrupt frame header (after offset {:?})",
            self.last_offset
        );
        self.compressed.resize(clen as usize, 0);
        self.input
            .read_exact(&mut self.compressed)
            .with_context(|| format!("{frame}: the file is cut short"))?;
        let plain = self
            .decompressor
            .decompress(&self.compressed, plen as usize)
            .with_context(|| format!("{frame}: corrupt data"))?;
        let decoded =
            decode_frame(&plain, records).with_context(|| format!("{frame}: corrupt records"))?;
        ensure!(
            decoded.first().map(|r| r.offset) == Some(first),
            "{frame}: its first record has another offset"
        );
        self.frame = decoded.into_iter();
        Ok(())
    }
}

fn decode_frame(mut b: &[u8], records: u32) -> anyhow::Result<Vec<ArchivedRecord>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
        ensure!(b.len() >= n, "cut short");
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    fn int<const N: usize>(b: &mut &[u8]) -> anyhow::Result<[u8; N]> {
        Ok(take(b, N)?.try_into().expect("N bytes"))
    }
    fn bytes(b: &mut &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let n = i32::from_le_bytes(int(b)?);
        if n == -1 {
            return Ok(None);
        }
        ensure!(n >= 0, "a negative length");
        Ok(Some(take(b, n as usize)?.to_vec()))
    }
    let mut out = Vec::with_capacity(records as usize);
    for _ in 0..records {
        let offset = i64::from_le_bytes(int(&mut b)?);
        let ts = i64::from_le_bytes(int(&mut b)?);
        let key = bytes(&mut b)?;
        let value = bytes(&mut b)?;
        let count = u16::from_le_bytes(int(&mut b)?);
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let n = u16::from_le_bytes(int(&mut b)?) as usize;
            let name = String::from_utf8(take(&mut b, n)?.to_vec())
                .context("a header name that is not UTF-8")?;
            headers.push((name, bytes(&mut b)?));
        }
        if let Some(prev) = out.last().map(|r: &ArchivedRecord| r.offset) {
            ensure!(offset > prev, "offset {offset} after {prev}");
        }
        out.push(ArchivedRecord {
            offset,
            timestamp_ms: (ts != i64::MIN).then_some(ts),
            key,
            value,
            headers,
        });
    }
    if !b.is_empty() {
        bail!("{} bytes after its last record", b.len());
    }
    Ok(out)
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
        let mut w = Writer::create(path, 3).unwrap();
        for r in records {
            w.push(
                r.offset,
                r.timestamp_ms,
                r.key.as_deref(),
                r.value.as_deref(),
                r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            )
            .unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(path: &Path) -> anyhow::Result<Vec<ArchivedRecord>> {
        let mut r = Reader::open(path)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
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
