//! Parallel gzip: one standard gzip member, compressed on every core (pigz's scheme).
//!
//! The input is cut into fixed [`CHUNK`]s. Each chunk becomes raw deflate on a thread of a
//! process-wide pool: primed with the previous 32 KiB of input as dictionary (so matches reach
//! back across the cut, as in a serial stream) and ended with a sync flush (byte aligned, not
//! final). The encoder writes the chunks in input order behind one gzip header, then a final
//! empty block, the CRC32 (per-chunk CRCs combined) and ISIZE. The result is one gzip member
//! that any decoder reads, including single-member ones that stop after the first member.
//!
//! Incompressible chunks (random or already compressed data) cost little more than a copy: a
//! chunk is first sampled ([`SAMPLE_PIECES`] pieces of [`SAMPLE_PIECE`] bytes deflated at the
//! same level), and when the sample does not get under 98 % the chunk is written as stored
//! blocks without deflating it. A chunk that deflates to no less than its stored size is stored
//! too.
//!
//! The output depends only on the input bytes and the level: not on how the input is split into
//! writes, on `flush` calls or on the number of threads.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};
use std::sync::OnceLock;

use flate2::{Compress, Compression, Crc, FlushCompress};

/// The level layers are compressed at for a push (and `write_tar`'s default). Not 1: zlib-rs's
/// level 1 (zlib-ng's `deflate_quick`) uses fixed Huffman codes only, which leaves text almost
/// uncompressed (base64 text: 96.6 % at level 1, 73.2 % at level 2, 73.1 % at docker's level
/// 6); level 2 costs about 1.8x level 1's time on compressible chunks and nothing more on the
/// stored ones, and gives blobs as small as docker's.
pub const LAYER_LEVEL: u32 = 2;

/// Uncompressed bytes per chunk. 1 MiB: the per-chunk costs (a 32 KiB dictionary, the sample, a
/// 5-byte sync marker, a task) stay around 2 % of a chunk's deflate time (the sample alone
/// would cost four times as much at 256 KiB) and the output is within 0.1 % of a serial
/// stream's size (0.7 % larger with 128 KiB chunks and no dictionary); a 60 MB layer still
/// gives 60 tasks to spread over the cores; a task holds about 2 MiB (its input and output).
pub const CHUNK: usize = 1 << 20;
/// Deflate's window: how much preceding input primes each chunk.
const WINDOW: usize = 32 << 10;
/// Pieces deflated to decide whether a chunk is worth deflating, spread over the chunk.
pub const SAMPLE_PIECES: usize = 4;
/// Bytes per sample piece. On a tar of /usr/lib (665 chunks) 4 KiB pieces stored 2 chunks that
/// would have deflated below 98 % (72 kB lost of ~300 MB), the same as 8 or 16 KiB pieces, for
/// 1.6 % of the deflate time.
pub const SAMPLE_PIECE: usize = 4 << 10;
/// Chunks shorter than this are deflated without a sample (the size check after deflating still
/// stores them when that does not pay).
const SAMPLE_MIN: usize = 64 << 10;
/// Largest stored block.
const STORED_MAX: usize = 0xffff;

/// Gzip header: no name, no mtime (reproducible), XFL 0 (patched by [`header`] for the level),
/// OS 255 (unknown), as flate2 and Go write it.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// [`HEADER`] with XFL as zlib and flate2 set it: 4 ("fastest") up to level 1, 2 ("maximum")
/// at 9, else 0.
fn header(level: u32) -> [u8; 10] {
    let mut h = HEADER;
    h[8] = match level {
        0 | 1 => 4,
        9 => 2,
        _ => 0,
    };
    h
}
/// A final, empty fixed-Huffman block: BFINAL=1, BTYPE=01, end-of-block code.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// The pool shared by every encoder in the process: one thread per core, so layers compressed at
/// the same time share the cores instead of each starting its own threads. `None` when threads
/// cannot be started (chunks are then compressed on the caller's thread, same output).
fn shared_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .thread_name(|i| format!("lade-gzip-{i}"))
            // A panicking chunk drops its result sender: the encoder reports an error instead
            // of rayon aborting the process.
            .panic_handler(|_| {})
            .build()
            .ok()
    })
    .as_ref()
}

/// A [`Write`] that gzips everything written to it into `inner` (see the module docs). Call
/// [`GzEncoder::finish`] to end the stream; dropping it without does not.
pub struct GzEncoder<W: Write> {
    inner: W,
    level: u32,
    pool: Option<&'static rayon::ThreadPool>,
    /// The chunk being filled: always `CHUNK` long, `filled` bytes of it are input.
    buf: Vec<u8>,
    filled: usize,
    /// The last `WINDOW` bytes of input before `buf`.
    window: Vec<u8>,
    /// Chunks handed to the pool, oldest first.
    pending: VecDeque<Receiver<io::Result<Encoded>>>,
    max_pending: usize,
    /// Buffers back from finished chunks, reused instead of allocating.
    spare: Vec<Encoded>,
    crc: Crc,
    header_written: bool,
}

/// A chunk to compress, and (once done) its compressed bytes and CRC.
struct Encoded {
    level: u32,
    window: Vec<u8>,
    input: Vec<u8>,
    out: Vec<u8>,
    crc: Crc,
}

impl<W: Write> GzEncoder<W> {
    /// An encoder at `level` (0-9; 0 stores everything) on the shared pool.
    pub fn new(inner: W, level: u32) -> Self {
        Self::with_pool(inner, level, shared_pool())
    }

    /// An encoder on `pool`, or compressing on the caller's thread when `None`.
    fn with_pool(inner: W, level: u32, pool: Option<&'static rayon::ThreadPool>) -> Self {
        // Two chunks per thread keep every thread busy while the caller writes out and reads in,
        // and bound memory to about 4 MiB per thread per encoder.
        let max_pending = pool.map_or(1, |p| 2 * p.current_num_threads().max(1));
        Self {
            inner,
            level: level.min(9),
            pool,
            buf: Vec::new(),
            filled: 0,
            window: Vec::with_capacity(WINDOW),
            pending: VecDeque::new(),
            max_pending,
            spare: Vec::new(),
            crc: Crc::new(),
            header_written: false,
        }
    }

    /// Reads `r` to its end straight into the chunk buffers (no intermediate copy, unlike
    /// `io::copy`). Returns the number of bytes read.
    pub fn write_from<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            self.ensure_buf();
            let n = match r.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.filled += n;
            total += n as u64;
            if self.filled == CHUNK {
                self.submit()?;
            }
        }
    }

    /// Ends the stream (the last chunk, the final block, CRC32 and ISIZE) and returns the
    /// inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.filled > 0 {
            self.submit()?;
        }
        while self.write_next(true)? {}
        self.write_header()?;
        let mut trailer = [0u8; 10];
        trailer[..2].copy_from_slice(&FINAL_BLOCK);
        trailer[2..6].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[6..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner.write_all(&trailer)?;
        Ok(self.inner)
    }

    fn ensure_buf(&mut self) {
        if self.buf.len() < CHUNK {
            self.buf.resize(CHUNK, 0);
        }
    }

    /// Hands the filled chunk to the pool (first waiting for the oldest when too many are in
    /// flight), then writes out whatever is ready.
    fn submit(&mut self) -> io::Result<()> {
        while self.pending.len() >= self.max_pending {
            self.write_next(true)?;
        }
        let mut job = self.spare.pop().unwrap_or_else(|| Encoded {
            level: self.level,
            window: Vec::with_capacity(WINDOW),
            input: Vec::new(),
            out: Vec::new(),
            crc: Crc::new(),
        });
        job.level = self.level;
        // The job takes the chunk and the window before it; the next window is this chunk's end.
        std::mem::swap(&mut job.input, &mut self.buf);
        job.input.truncate(self.filled);
        self.filled = 0;
        std::mem::swap(&mut job.window, &mut self.window);
        self.window.clear();
        let tail = job.input.len().saturating_sub(WINDOW);
        if tail == 0 {
            // A chunk shorter than the window is only ever the last one, so the next window
            // does not matter; keep it right anyway.
            let keep = job.window.len().saturating_sub(WINDOW - job.input.len());
            self.window.extend_from_slice(&job.window[keep..]);
        }
        self.window.extend_from_slice(&job.input[tail..]);
        let (tx, rx) = sync_channel(1);
        match self.pool {
            Some(pool) => pool.spawn(move || {
                let _ = tx.send(job.run());
            }),
            None => {
                let _ = tx.send(job.run());
            }
        }
        self.pending.push_back(rx);
        while self.write_next(false)? {}
        Ok(())
    }

    /// Writes the oldest chunk out if it is done (or, with `wait`, once it is). Returns whether
    /// a chunk was written.
    fn write_next(&mut self, wait: bool) -> io::Result<bool> {
        let Some(rx) = self.pending.front() else {
            return Ok(false);
        };
        let done = if wait {
            rx.recv().map_err(|_| worker_gone())?
        } else {
            match rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => return Ok(false),
                Err(TryRecvError::Disconnected) => return Err(worker_gone()),
            }
        };
        self.pending.pop_front();
        let done = done?;
        self.write_header()?;
        self.inner.write_all(&done.out)?;
        self.crc.combine(&done.crc);
        self.spare.push(done);
        Ok(true)
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&header(self.level))?;
            self.header_written = true;
        }
        Ok(())
    }
}

fn worker_gone() -> io::Error {
    io::Error::other("a gzip compression thread stopped")
}

impl<W: Write> Write for GzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        self.ensure_buf();
        let n = data.len().min(CHUNK - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == CHUNK {
            self.submit()?;
        }
        Ok(n)
    }

    /// Writes out the chunks already compressed and flushes the inner writer. It does not cut
    /// the current chunk short (that would make the output depend on when flush is called).
    fn flush(&mut self) -> io::Result<()> {
        while self.write_next(false)? {}
        self.inner.flush()
    }
}

thread_local! {
    /// Each pool thread's deflate state, reset per chunk (allocating one costs ~300 kB).
    static DEFLATE: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

impl Encoded {
    fn run(mut self) -> io::Result<Self> {
        self.crc.reset();
        self.crc.update(&self.input);
        DEFLATE.with(|cell| {
            let mut cell = cell.borrow_mut();
            let c = match &mut *cell {
                Some((l, c)) if *l == self.level => c,
                slot => &mut slot.insert((self.level, deflater(self.level))).1,
            };
            encode_chunk(c, self.level, &self.window, &self.input, &mut self.out)
        })?;
        Ok(self)
    }
}

fn deflater(level: u32) -> Compress {
    Compress::new(Compression::new(level), false)
}

/// Size of `n` bytes as stored blocks.
fn stored_len(n: usize) -> usize {
    n + 5 * n.div_ceil(STORED_MAX).max(1)
}

/// `input` as non-final stored blocks (the stream is byte aligned before and after).
fn put_stored(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(stored_len(input.len()));
    for block in input.chunks(STORED_MAX) {
        let n = block.len() as u16;
        // BFINAL=0, BTYPE=00, then padding to the byte boundary.
        out.push(0);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(block);
    }
}

/// Room for the raw deflate of `n` bytes with a sync flush in the worst case. Level 1's
/// static-Huffman blocks spend up to 9 bits on a literal (zlib-ng's `deflateBound` adds n/8 for
/// it); the other levels fall back to stored blocks; plus block headers and the flush marker.
fn deflate_bound(n: usize) -> usize {
    n + n.div_ceil(8) + 5 * n.div_ceil(STORED_MAX).max(1) + 64
}

/// Raw deflate of `input` (primed with `dict`) ending in a sync flush, into `out` (replaced).
/// Returns false if the call did not complete; `c` is then replaced by a fresh state, because
/// zlib-rs 0.6's reset does not clear a half-written level-1 block (`block_open`) and the next
/// stream would be corrupt (or trip an assertion). With `deflate_bound` room that never happens.
fn deflate_into(
    c: &mut Compress,
    level: u32,
    dict: &[u8],
    input: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    c.reset();
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    out.clear();
    out.reserve(deflate_bound(input.len()));
    // A difference, not the total: zlib may count a dictionary as input.
    let in0 = c.total_in();
    c.compress_vec(input, out, FlushCompress::Sync)
        .map_err(io::Error::other)?;
    // Output room left over means the flush completed.
    let done = (c.total_in() - in0) as usize == input.len() && out.len() < out.capacity();
    if !done {
        *c = deflater(level);
    }
    Ok(done)
}

/// Whether deflating a sample of `input` gets it under 98 %.
fn sample_compresses(
    c: &mut Compress,
    level: u32,
    input: &[u8],
    scratch: &mut Vec<u8>,
) -> io::Result<bool> {
    let (mut n_in, mut n_out) = (0usize, 0usize);
    for k in 0..SAMPLE_PIECES {
        let start = input.len() / SAMPLE_PIECES * k;
        let piece = &input[start..(start + SAMPLE_PIECE).min(input.len())];
        n_in += piece.len();
        n_out += if deflate_into(c, level, &[], piece, scratch)? {
            scratch.len()
        } else {
            deflate_bound(piece.len())
        };
    }
    Ok(n_out * 100 < n_in * 98)
}

/// One chunk as raw deflate (or stored blocks when deflating does not pay) into `out`.
fn encode_chunk(
    c: &mut Compress,
    level: u32,
    dict: &[u8],
    input: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    if level == 0 || (input.len() >= SAMPLE_MIN && !sample_compresses(c, level, input, out)?) {
        put_stored(input, out);
        return Ok(());
    }
    if !deflate_into(c, level, dict, input, out)? || out.len() >= stored_len(input.len()) {
        put_stored(input, out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Deterministic pseudo-random bytes (xorshift64*).
    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// Compressible text: words from a small vocabulary in a pseudo-random order.
    fn text(n: usize) -> Vec<u8> {
        let words: Vec<&str> = "layer blob digest sha256 manifest registry push pull tar gzip"
            .split(' ')
            .collect();
        random(n, 7)
            .iter()
            .flat_map(|b| {
                let w = words[*b as usize % words.len()];
                w.bytes().chain([if b % 9 == 0 { b'\n' } else { b' ' }])
            })
            .take(n)
            .collect()
    }

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), level);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Decodes with flate2's single-member decoder and checks nothing follows the member.
    fn gunzip(z: &[u8]) -> Vec<u8> {
        let mut d = flate2::read::GzDecoder::new(z);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert!(d.into_inner().is_empty(), "bytes after the gzip member");
        out
    }

    /// `gzip -t` and `gzip -dc` of `z`; returns the decompressed bytes.
    fn system_gunzip(z: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gz");
        std::fs::write(&p, z).unwrap();
        let run = |arg: &str| {
            Command::new("gzip")
                .arg(arg)
                .arg(&p)
                .stderr(Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("cannot run gzip ({e}): apt-get install gzip"))
        };
        let t = run("-t");
        assert!(t.status.success(), "gzip -t rejected the stream");
        let d = run("-dc");
        assert!(d.status.success(), "gzip -dc failed");
        d.stdout
    }

    fn round_trip(data: &[u8]) -> Vec<u8> {
        let z = gz(data, 1);
        assert_eq!(&z[..10], &header(1));
        assert_eq!(z[8], 4, "XFL fastest at level 1");
        assert_eq!(gunzip(&z), data, "flate2 GzDecoder");
        assert_eq!(system_gunzip(&z), data, "gzip -dc");
        z
    }

    #[test]
    fn round_trips_through_flate2_and_gzip() {
        let mut mixed = random(CHUNK + 5000, 1);
        mixed.extend(text(CHUNK));
        mixed.extend(random(3 * SAMPLE_MIN, 2));
        for data in [
            Vec::new(),
            vec![b'x'],
            text(1000),
            random(1000, 3),
            text(CHUNK),
            random(CHUNK, 4),
            text(2 * CHUNK),
            text(CHUNK + 1),
            text(3 * CHUNK - 1),
            mixed,
        ] {
            round_trip(&data);
        }
    }

    #[test]
    fn empty_input_is_header_final_block_and_zero_trailer() {
        let z = round_trip(b"");
        assert_eq!(z.len(), 10 + 2 + 8);
        assert_eq!(&z[12..], &[0; 8]);
    }

    #[test]
    fn output_depends_only_on_input_and_level() {
        let mut data = text(2 * CHUNK + 777);
        data.extend(random(CHUNK / 2, 9));
        let a = gz(&data, 1);
        assert_eq!(gz(&data, 1), a);
        // Other write sizes, flushes, and read-driven input.
        let mut e = GzEncoder::new(Vec::new(), 1);
        for (i, piece) in data.chunks(9973).enumerate() {
            e.write_all(piece).unwrap();
            if i % 7 == 0 {
                e.flush().unwrap();
            }
        }
        assert_eq!(e.finish().unwrap(), a);
        let mut e = GzEncoder::new(Vec::new(), 1);
        assert_eq!(e.write_from(&mut &data[..]).unwrap(), data.len() as u64);
        assert_eq!(e.finish().unwrap(), a);
        // Other thread counts, and no pool at all.
        for threads in [1, 3] {
            let pool = Box::leak(Box::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap(),
            ));
            let mut e = GzEncoder::with_pool(Vec::new(), 1, Some(pool));
            e.write_all(&data).unwrap();
            assert_eq!(e.finish().unwrap(), a, "{threads} threads");
        }
        let mut e = GzEncoder::with_pool(Vec::new(), 1, None);
        e.write_all(&data).unwrap();
        assert_eq!(e.finish().unwrap(), a, "no pool");
    }

    #[test]
    fn incompressible_chunks_are_stored() {
        let data = random(2 * CHUNK + 100, 5);
        let z = round_trip(&data);
        // Header, each chunk as stored blocks, final block, trailer: nothing was deflated.
        let stored = stored_len(CHUNK) * 2 + stored_len(100);
        assert_eq!(z.len(), 10 + stored + 2 + 8);
        // The first stored block starts right after the header.
        assert_eq!(&z[10..15], &[0, 0xff, 0xff, 0, 0]);
        // Level 0 stores compressible data too.
        let t = text(CHUNK + 10);
        let z0 = gz(&t, 0);
        assert_eq!(z0.len(), 10 + stored_len(CHUNK) + stored_len(10) + 2 + 8);
        assert_eq!(gunzip(&z0), t);
    }

    #[test]
    fn compressible_chunks_compress_like_a_serial_stream() {
        let data = text(4 * CHUNK);
        let z = round_trip(&data);
        let mut serial = flate2::write::GzEncoder::new(Vec::new(), Compression::new(1));
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap();
        assert!(z.len() < data.len() / 2, "{} of {}", z.len(), data.len());
        // Within 1 % of one serial deflate stream: the dictionary carries matches across chunks.
        assert!(
            (z.len() as f64) < serial.len() as f64 * 1.01,
            "{} vs serial {}",
            z.len(),
            serial.len()
        );
    }

    #[test]
    fn a_chunk_that_does_not_shrink_is_stored_even_past_the_sample() {
        // Compressible where the sample looks (the start of each quarter), random elsewhere.
        let mut data = random(CHUNK, 11);
        for k in 0..SAMPLE_PIECES {
            let start = CHUNK / SAMPLE_PIECES * k;
            data[start..start + SAMPLE_PIECE].fill(b'a');
        }
        let z = round_trip(&data);
        // Level 1 expands the random rest: stored instead.
        assert_eq!(z.len(), 10 + stored_len(CHUNK) + 2 + 8);
    }
}
