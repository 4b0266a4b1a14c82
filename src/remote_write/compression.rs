//! Which compression a remote-write 1.0 body gets, and the zstd compressor: the decisions
//! are plain functions over plain data, tested without a network.
//!
//! The remote-write specification says snappy. VictoriaMetrics also takes zstd (its own
//! remote-write variant: the same protobuf, `Content-Encoding: zstd` and
//! `X-VictoriaMetrics-Remote-Write-Version: 1`), which makes bodies markedly smaller for a
//! little more CPU. A receiver says it takes zstd by answering `1` to
//! `GET <write url>?get_vm_proto_version=1`; anything else (a 404, an HTML page, garbage, no
//! answer within [`HANDSHAKE_DEADLINE`]) means snappy.
//!
//! [`Negotiation`] is one endpoint's state, shared by its shards:
//! - `auto` starts with snappy and asks the handshake once; `1` switches to zstd.
//! - `snappy` never asks; `zstd` never asks and starts with zstd.
//! - A zstd body refused with 400 or 415 (what receivers answer to an encoding they do not
//!   read; a proxy in front of VictoriaMetrics may strip the handshake but not the body)
//!   makes the endpoint send snappy from then on: the refused request is sent again as
//!   snappy, so the same samples arrive, once. The state lives in memory: a restart tries
//!   zstd again.
//!
//! Remote-write 2.0 is snappy-only by its specification: this choice applies to 1.0 bodies.

use std::time::Duration;

use crate::config::CompressionConfig;

/// zstd level of request bodies below [`ZSTD_LARGE_BODY`]. Measured on the 2,000-sample
/// request of this module's tests (169 KB of protobuf; snappy: 22.1 KB): level 1 gives 13.9 KB
/// at about 320 MB/s, fewer bytes than levels 2 and 3 at the same speed (for inputs this small
/// zstd picks smaller tables from level 3 on); level 4 saves 2.5 % more at a fifth of the
/// speed, level 9 10 % at a tenth; the `--fast` levels save no CPU worth the bytes they add.
pub const ZSTD_LEVEL: i32 = 1;

/// zstd level of bodies of [`ZSTD_LARGE_BODY`] and more (a request of several thousand
/// samples). From 256 KiB on zstd sizes its tables for large inputs, and the double-fast
/// matcher of levels 2 and 3 finds label text repeated across the whole request, which level
/// 1's single hash misses. On 10,000-sample request bodies captured from the scrape benchmark
/// (161 bytes a sample of protobuf) the `zstd` command-line tool gave 5.57 bytes a sample at
/// level 1, 4.48 at level 3 and 4.28 at level 5 (a slower, lazy matcher). End to end, level 2
/// took pushprobe's bytes a sample into VictoriaMetrics only from 6.55 to 6.35, and levels 4
/// and 5 (set with `compression_level`) sent no fewer bytes a sample than level 3 (5.71–5.87
/// and 5.68–5.79 against 5.66–5.75, with vmagent's own figure moving by 8 % between runs),
/// level 5 for half as much CPU again (docs/performance.md): so level 3, the cheapest of them.
pub const ZSTD_LEVEL_LARGE: i32 = 3;

/// zstd's largest block of input (128 KiB): it compresses a frame block by block.
const ZSTD_BLOCK_BYTES: usize = 128 * 1024;

/// An error code of zstd's as an I/O error, as the `zstd` crate reports its own.
fn zstd_error(code: usize) -> std::io::Error {
    std::io::Error::other(zstd::zstd_safe::get_error_name(code))
}

/// Hash and chain table sizes (log2 of entries) of [`ZSTD_LEVEL_LARGE`], below its own
/// 17 and 16 for large inputs, which are 768 KiB of the context's 1.3 MB and stay resident
/// between requests. On 10,000-sample bodies captured from the scrape benchmark, tables of
/// 15 and 14 gave the same size within 0.8 % either way (most within 0.02 %), at the same
/// speed or faster: the label text that repeats is found without the larger tables. How far
/// back a match may reach (the window, 2 MiB for these bodies) is what saves the bytes, and
/// it is not changed. A configured `compression_level` keeps zstd's own tables.
const ZSTD_LARGE_TABLES: (u32, u32) = (15, 14);

/// How far back a match may reach (log2 of bytes) at [`ZSTD_LEVEL_LARGE`] chosen by size:
/// 1 MiB, below the level's own 2 MiB. A frame is compressed piece by piece as it is encoded
/// (see [`ZstdCompressor::start`]), so zstd keeps the window and a block in a buffer of its
/// own, which stays resident between requests: 1.1 MiB with this window. On 10,000-sample
/// bodies captured from the scrape benchmark (1.6 MB of protobuf each, every target's
/// series within a few hundred KiB of the previous target's), a 1 MiB window gave 0.3 %
/// fewer bytes than 2 MiB, 512 KiB 0.05 % more, and 256 KiB 47 % more.
const ZSTD_LARGE_WINDOW_LOG: u32 = 20;

/// Size of the uncompressed protobuf from which [`ZSTD_LEVEL_LARGE`] applies: zstd's own
/// boundary between its small-input and large-input parameter tables.
pub const ZSTD_LARGE_BODY: usize = 256 * 1024;

/// Whether a body of about `expected_len` bytes of protobuf is compressed in pieces as it is
/// encoded ([`ZstdCompressor::start`]) rather than whole ([`ZstdCompressor::compress`]): from
/// [`ZSTD_LARGE_BODY`] on. A large body is then never whole in memory, and comes out as small
/// as whole; a small one is cheap to hold, and whole lets zstd fit its parameters to the size.
pub fn in_pieces(expected_len: usize) -> bool {
    expected_len >= ZSTD_LARGE_BODY
}

/// Levels `compression_level` accepts: zstd's regular ones. The negative (fast) levels save
/// no CPU worth the bytes they add; levels above 19 are zstd's "ultra" ones, which its own
/// tool refuses without `--ultra` for the memory they take.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 1..=19;

/// The zstd level for a protobuf of `len` bytes: `configured` (an endpoint's
/// `compression_level`) for every body, or else by size, [`ZSTD_LEVEL`] below
/// [`ZSTD_LARGE_BODY`] and [`ZSTD_LEVEL_LARGE`] from it on.
pub fn zstd_level(len: usize, configured: Option<i32>) -> i32 {
    match configured {
        Some(level) => level,
        None if len >= ZSTD_LARGE_BODY => ZSTD_LEVEL_LARGE,
        None => ZSTD_LEVEL,
    }
}

/// Longest the handshake may take: it delays the first request at most this long.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// Query parameter of the handshake; its value is `1`.
pub const HANDSHAKE_PARAM: &str = "get_vm_proto_version";

/// Most bytes of a handshake answer read: a real one is one character.
pub const HANDSHAKE_MAX_BODY: usize = 256;

/// The compression of one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Snappy block format, as the remote-write specification requires.
    Snappy,
    /// zstd, for receivers that announced it.
    Zstd,
}

impl Compression {
    /// Label value in self-metrics and logs, also the `Content-Encoding` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Snappy => "snappy",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The handshake URL: the write URL with `get_vm_proto_version=1` added to its query.
pub fn handshake_url(write_url: &reqwest::Url) -> reqwest::Url {
    let mut url = write_url.clone();
    url.query_pairs_mut().append_pair(HANDSHAKE_PARAM, "1");
    url
}

/// Why a handshake did not announce zstd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeFailure {
    /// The receiver answered with a status other than 2xx (Prometheus: 405 or 404).
    #[error("the receiver answered status {0}")]
    Status(u16),
    /// A 2xx answer that is not `1` (a web page, another protocol version).
    #[error("the receiver answered {0:?}, not 1")]
    Unexpected(String),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The connection failed.
    #[error("{0}")]
    Transport(String),
}

impl HandshakeFailure {
    /// Label value of the handshake counter.
    pub fn result(&self) -> &'static str {
        match self {
            HandshakeFailure::Status(_) => "status",
            HandshakeFailure::Unexpected(_) => "unexpected",
            HandshakeFailure::TimedOut(_) => "timeout",
            HandshakeFailure::Transport(_) => "transport",
        }
    }
}

/// Judges a handshake answer: `Ok` when it announces zstd (2xx and `1`, surrounding
/// whitespace allowed).
pub fn judge_handshake(status: u16, body: &[u8]) -> Result<(), HandshakeFailure> {
    if !(200..300).contains(&status) {
        return Err(HandshakeFailure::Status(status));
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text == "1" {
        return Ok(());
    }
    // Shown in a log line: one short line, no control characters.
    let shown: String = text
        .chars()
        .take(64)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Err(HandshakeFailure::Unexpected(shown))
}

/// Whether a status refuses the encoding of a body compressed with `used`: 415 says so;
/// 400 is what remote-write 1.0 receivers answer to a body they cannot read.
pub fn refuses(used: Compression, status: u16) -> bool {
    used == Compression::Zstd && matches!(status, 400 | 415)
}

/// What a refusal of a zstd body changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The endpoint switched to snappy now (log it once).
    Switched,
    /// It had already switched (another shard's refusal came first).
    Already,
}

/// One endpoint's compression: the configured choice and what it settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    choice: CompressionConfig,
    current: Compression,
    /// A zstd body was refused: snappy for good, whatever a handshake says.
    refused: bool,
}

impl Negotiation {
    /// The state at start: zstd only when configured outright.
    pub fn new(choice: CompressionConfig) -> Self {
        let current = match choice {
            CompressionConfig::Zstd => Compression::Zstd,
            CompressionConfig::Auto | CompressionConfig::Snappy => Compression::Snappy,
        };
        Negotiation {
            choice,
            current,
            refused: false,
        }
    }

    /// Whether the receiver should be asked (only `auto` asks).
    pub fn needs_handshake(&self) -> bool {
        self.choice == CompressionConfig::Auto
    }

    /// Settles `auto` with the handshake's result; returns the compression now in use.
    pub fn handshake(&mut self, result: &Result<(), HandshakeFailure>) -> Compression {
        if self.needs_handshake() && !self.refused {
            self.current = match result {
                Ok(()) => Compression::Zstd,
                Err(_) => Compression::Snappy,
            };
        }
        self.current
    }

    /// Notes that a zstd body was refused: snappy from now on.
    pub fn zstd_refused(&mut self) -> Fallback {
        self.refused = true;
        if self.current == Compression::Zstd {
            self.current = Compression::Snappy;
            Fallback::Switched
        } else {
            Fallback::Already
        }
    }

    /// The compression of the next request.
    pub fn current(&self) -> Compression {
        self.current
    }
}

/// A zstd compressor that keeps its context (its tables, up to about half a megabyte) from
/// request to request instead of allocating one per body.
pub struct ZstdCompressor {
    inner: zstd::bulk::Compressor<'static>,
    /// The level the context is set to, changed only when a body's size asks for another.
    level: i32,
    /// The endpoint's `compression_level`; unset: by body size.
    configured: Option<i32>,
}

impl std::fmt::Debug for ZstdCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZstdCompressor")
            .field("level", &self.level)
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}

impl ZstdCompressor {
    /// A compressor at `configured` for every body, or, unset, at the level of each body's
    /// size ([`zstd_level`]).
    pub fn new(configured: Option<i32>) -> std::io::Result<Self> {
        let level = configured.unwrap_or(ZSTD_LEVEL);
        Ok(ZstdCompressor {
            inner: zstd::bulk::Compressor::new(level)?,
            level,
            configured,
        })
    }

    /// Compresses `input` as one zstd frame into `out` (cleared first), at the level
    /// [`zstd_level`] gives it. Knowing the size, zstd picks parameters for it: for small
    /// bodies that saves bytes a frame written in pieces does not (see
    /// [`ZstdCompressor::start`]).
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        let level = zstd_level(input.len(), self.configured);
        if level != self.level {
            self.set_level(level)?;
        }
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(input.len()));
        self.inner.compress_to_buffer(input, out)?;
        Ok(())
    }

    /// Starts a frame into `out` (cleared first) for a protobuf handed over in pieces with
    /// [`ZstdCompressor::write`] as it is encoded, so that it is never whole in memory; at
    /// the level [`zstd_level`] gives `expected_len`, an estimate of its size.
    ///
    /// The frame does not state its content size, which is not known until the end; zstd
    /// decoders, VictoriaMetrics' among them, read such frames. Not knowing it either, zstd
    /// uses its parameters for large inputs: for a large body the ones
    /// [`ZstdCompressor::compress`] would pick, for a small one they cost bytes (23 % more on
    /// the backlog bench's requests), so small bodies are better compressed whole.
    pub fn start(&mut self, expected_len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        let level = zstd_level(expected_len, self.configured);
        if level != self.level {
            self.set_level(level)?;
        }
        // A frame left unfinished by an error must not run into this one.
        self.inner
            .context_mut()
            .reset(zstd::zstd_safe::ResetDirective::SessionOnly)
            .map_err(zstd_error)?;
        out.clear();
        Ok(())
    }

    /// Compresses the next piece of the frame [`ZstdCompressor::start`] began, appending
    /// to `out` what zstd has ready.
    pub fn write(&mut self, piece: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        use zstd::zstd_safe::{InBuffer, OutBuffer};
        let mut input = InBuffer::around(piece);
        while input.pos() < piece.len() {
            out.reserve(zstd::zstd_safe::compress_bound(piece.len() - input.pos()));
            let at = out.len();
            self.inner
                .context_mut()
                .compress_stream2(
                    &mut OutBuffer::around_pos(out, at),
                    &mut input,
                    zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue,
                )
                .map_err(zstd_error)?;
        }
        Ok(())
    }

    /// Ends the frame: compresses what zstd still holds and appends it to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        loop {
            // What a block of input can become, and the frame's end.
            out.reserve(zstd::zstd_safe::compress_bound(ZSTD_BLOCK_BYTES));
            let at = out.len();
            let left = self
                .inner
                .context_mut()
                .end_stream(&mut zstd::zstd_safe::OutBuffer::around_pos(out, at))
                .map_err(zstd_error)?;
            if left == 0 {
                return Ok(());
            }
        }
    }

    /// Sets the context to `level`, with [`ZSTD_LARGE_TABLES`] and [`ZSTD_LARGE_WINDOW_LOG`]
    /// at the large level chosen by size; 0 gives the level's own sizes back.
    fn set_level(&mut self, level: i32) -> std::io::Result<()> {
        use zstd::zstd_safe::CParameter;
        let ((hash, chain), window) = if level == ZSTD_LEVEL_LARGE && self.configured.is_none() {
            (ZSTD_LARGE_TABLES, ZSTD_LARGE_WINDOW_LOG)
        } else {
            ((0, 0), 0)
        };
        self.inner.set_compression_level(level)?;
        self.inner.set_parameter(CParameter::HashLog(hash))?;
        self.inner.set_parameter(CParameter::ChainLog(chain))?;
        self.inner.set_parameter(CParameter::WindowLog(window))?;
        self.level = level;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::encode::Encoder;
    use crate::series::{Labels, Sample};

    #[test]
    fn only_a_2xx_one_announces_zstd() {
        assert_eq!(judge_handshake(200, b"1"), Ok(()));
        assert_eq!(judge_handshake(200, b" 1\n"), Ok(()));
        assert_eq!(
            judge_handshake(404, b"1"),
            Err(HandshakeFailure::Status(404))
        );
        assert_eq!(
            judge_handshake(204, b""),
            Err(HandshakeFailure::Unexpected(String::new()))
        );
        let html = judge_handshake(200, b"<html>\n<body>Welcome</body></html>").unwrap_err();
        assert_eq!(
            html,
            HandshakeFailure::Unexpected("<html> <body>Welcome</body></html>".into())
        );
        assert_eq!(html.result(), "unexpected");
        assert!(judge_handshake(200, b"2").is_err());
        assert!(judge_handshake(200, b"11").is_err());
        assert!(judge_handshake(200, &[0xff, 0x00, b'1']).is_err());
        let long = judge_handshake(200, &[b'x'; 1000]).unwrap_err();
        assert_eq!(long, HandshakeFailure::Unexpected("x".repeat(64)));
    }

    #[test]
    fn handshake_url_keeps_the_write_urls_query() {
        let plain: reqwest::Url = "http://127.0.0.1:8428/api/v1/write".parse().unwrap();
        assert_eq!(
            handshake_url(&plain).as_str(),
            "http://127.0.0.1:8428/api/v1/write?get_vm_proto_version=1"
        );
        let tenant: reqwest::Url = "http://vm/insert/0/prometheus/api/v1/write?extra_label=a=b"
            .parse()
            .unwrap();
        assert_eq!(
            handshake_url(&tenant).as_str(),
            "http://vm/insert/0/prometheus/api/v1/write?extra_label=a=b&get_vm_proto_version=1"
        );
    }

    #[test]
    fn auto_follows_the_handshake_and_a_refusal_is_final() {
        let mut n = Negotiation::new(CompressionConfig::Auto);
        assert!(n.needs_handshake());
        assert_eq!(
            n.current(),
            Compression::Snappy,
            "snappy until the receiver says"
        );
        assert_eq!(n.handshake(&Ok(())), Compression::Zstd);
        assert_eq!(n.zstd_refused(), Fallback::Switched);
        assert_eq!(n.current(), Compression::Snappy);
        assert_eq!(n.zstd_refused(), Fallback::Already, "logged once");
        // A late or repeated handshake cannot undo the refusal.
        assert_eq!(n.handshake(&Ok(())), Compression::Snappy);

        let mut n = Negotiation::new(CompressionConfig::Auto);
        let failed = Err(HandshakeFailure::TimedOut(HANDSHAKE_DEADLINE));
        assert_eq!(n.handshake(&failed), Compression::Snappy);
    }

    #[test]
    fn explicit_choices_skip_the_handshake() {
        let mut snappy = Negotiation::new(CompressionConfig::Snappy);
        assert!(!snappy.needs_handshake());
        assert_eq!(snappy.handshake(&Ok(())), Compression::Snappy);
        let mut zstd = Negotiation::new(CompressionConfig::Zstd);
        assert!(!zstd.needs_handshake());
        assert_eq!(zstd.current(), Compression::Zstd);
        assert_eq!(zstd.zstd_refused(), Fallback::Switched);
        assert_eq!(zstd.current(), Compression::Snappy);
    }

    #[test]
    fn only_400_and_415_to_zstd_bodies_are_refusals_of_the_encoding() {
        assert!(refuses(Compression::Zstd, 415));
        assert!(refuses(Compression::Zstd, 400));
        for status in [200, 204, 401, 404, 409, 413, 429, 500, 503] {
            assert!(!refuses(Compression::Zstd, status), "{status}");
        }
        assert!(!refuses(Compression::Snappy, 415));
        assert!(!refuses(Compression::Snappy, 400));
    }

    /// A realistic request of 2,000 samples: node_exporter-like and application series (long
    /// label texts repeated across series, one sample each), counters with full-precision
    /// values and histogram buckets with integer counts, with external labels.
    fn realistic_body() -> Vec<u8> {
        realistic_body_of(1_800)
    }

    /// [`realistic_body`] with `app` application series instead of 1,800.
    fn realistic_body_of(app: u32) -> Vec<u8> {
        let mut samples = Vec::new();
        let ts = 1_765_000_000_000;
        // xorshift64: values with the entropy of real counters, reproducibly.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for cpu in 0..16 {
            for mode in [
                "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
            ] {
                let cpu_text = cpu.to_string();
                let labels = Labels::from_pairs([
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", cpu_text.as_str()),
                    ("instance", "edge-host-17.example.internal:9100"),
                    ("job", "node"),
                    ("mode", mode),
                ])
                .unwrap();
                samples.push(Sample {
                    labels,
                    value: (next() % 100_000_000) as f64 / 100.0,
                    timestamp_ms: ts + i64::from(cpu),
                });
            }
        }
        for i in 0..app {
            let handler = format!("/api/v1/resource/{}", i / 40);
            let le = format!("{}", 0.005 * f64::from(1 << (i % 12)));
            let labels = Labels::from_pairs([
                ("__name__", "http_request_duration_seconds_bucket"),
                ("handler", handler.as_str()),
                ("instance", "edge-host-17.example.internal:9100"),
                ("job", "app"),
                ("le", le.as_str()),
                ("method", if i % 3 == 0 { "POST" } else { "GET" }),
            ])
            .unwrap();
            samples.push(Sample {
                labels,
                value: (next() % 5_000) as f64,
                timestamp_ms: ts + 15_000 + (next() % 50) as i64,
            });
        }
        let external = Labels::from_pairs([("cluster", "edge-1"), ("region", "eu-west")]).unwrap();
        let mut encoder = Encoder::new();
        let (_, proto) = encoder.encode_uncompressed(&samples, &external);
        proto.to_vec()
    }

    #[test]
    fn zstd_bodies_decode_to_the_same_protobuf_and_are_smaller_than_snappy() {
        let proto = realistic_body();
        let mut compressor = ZstdCompressor::new(None).unwrap();
        let mut zstd_body = Vec::new();
        compressor.compress(&proto, &mut zstd_body).unwrap();
        let back = zstd::bulk::decompress(&zstd_body, proto.len()).unwrap();
        assert_eq!(back, proto);
        // The compressor is reused: a second body comes out the same.
        let mut again = Vec::new();
        compressor.compress(&proto, &mut again).unwrap();
        assert_eq!(again, zstd_body);

        let snappy_body = snap::raw::Encoder::new().compress_vec(&proto).unwrap();
        assert!(
            zstd_body.len() * 10 < snappy_body.len() * 7,
            "zstd {} bytes, snappy {} bytes, protobuf {} bytes",
            zstd_body.len(),
            snappy_body.len(),
            proto.len()
        );
    }

    #[test]
    fn large_bodies_get_the_large_level_and_the_level_follows_each_body() {
        assert_eq!(zstd_level(0, None), ZSTD_LEVEL);
        assert_eq!(zstd_level(ZSTD_LARGE_BODY - 1, None), ZSTD_LEVEL);
        assert_eq!(zstd_level(ZSTD_LARGE_BODY, None), ZSTD_LEVEL_LARGE);

        let small = realistic_body();
        let large = realistic_body_of(9_000);
        assert!(small.len() < ZSTD_LARGE_BODY && large.len() >= ZSTD_LARGE_BODY);
        let mut fresh = Vec::new();
        ZstdCompressor::new(None)
            .unwrap()
            .compress(&small, &mut fresh)
            .unwrap();

        let mut compressor = ZstdCompressor::new(None).unwrap();
        let mut body = Vec::new();
        compressor.compress(&large, &mut body).unwrap();
        assert_eq!(compressor.level, ZSTD_LEVEL_LARGE);
        assert_eq!(zstd::bulk::decompress(&body, large.len()).unwrap(), large);
        // Back to a small body: the same bytes as a compressor that never saw a large one.
        compressor.compress(&small, &mut body).unwrap();
        assert_eq!(compressor.level, ZSTD_LEVEL);
        assert_eq!(body, fresh);
    }

    #[test]
    fn the_large_level_keeps_smaller_tables_for_about_the_same_bytes() {
        let large = realistic_body_of(9_000);
        let mut by_size = ZstdCompressor::new(None).unwrap();
        let mut configured = ZstdCompressor::new(Some(ZSTD_LEVEL_LARGE)).unwrap();
        let (mut small_tables, mut own_tables) = (Vec::new(), Vec::new());
        by_size.compress(&large, &mut small_tables).unwrap();
        configured.compress(&large, &mut own_tables).unwrap();
        assert_eq!(by_size.level, configured.level);
        assert_eq!(
            zstd::bulk::decompress(&small_tables, large.len()).unwrap(),
            large
        );
        // What stays resident between requests: the context with its tables.
        let kept = by_size.inner.context_mut().sizeof();
        let full = configured.inner.context_mut().sizeof();
        assert!(
            kept + 512 * 1024 < full,
            "context {kept} bytes, with zstd's tables {full}"
        );
        assert!(
            small_tables.len() * 100 <= own_tables.len() * 102,
            "{} bytes with the smaller tables, {} with zstd's",
            small_tables.len(),
            own_tables.len()
        );
    }

    #[test]
    fn a_configured_level_applies_to_every_body() {
        assert_eq!(zstd_level(0, Some(7)), 7);
        assert_eq!(zstd_level(ZSTD_LARGE_BODY * 4, Some(2)), 2);

        let small = realistic_body();
        let large = realistic_body_of(9_000);
        let mut compressor = ZstdCompressor::new(Some(9)).unwrap();
        let mut body = Vec::new();
        for proto in [&small, &large, &small] {
            compressor.compress(proto, &mut body).unwrap();
            assert_eq!(compressor.level, 9);
            assert_eq!(&zstd::bulk::decompress(&body, proto.len()).unwrap(), proto);
            assert_eq!(body, zstd::bulk::compress(proto, 9).unwrap());
        }
    }

    #[test]
    fn only_large_bodies_go_in_pieces() {
        assert!(!in_pieces(0));
        assert!(!in_pieces(ZSTD_LARGE_BODY - 1));
        assert!(in_pieces(ZSTD_LARGE_BODY));
    }

    #[test]
    fn a_frame_written_in_pieces_is_the_frame_written_at_once() {
        let large = realistic_body_of(9_000);
        let mut compressor = ZstdCompressor::new(None).unwrap();
        let mut whole = Vec::new();
        compressor.start(large.len(), &mut whole).unwrap();
        compressor.write(&large, &mut whole).unwrap();
        compressor.finish(&mut whole).unwrap();
        // A large body comes out about as small as compressed whole, its size known.
        let mut one_shot = Vec::new();
        compressor.compress(&large, &mut one_shot).unwrap();
        assert!(
            whole.len() * 100 <= one_shot.len() * 101,
            "{} bytes in pieces, {} whole",
            whole.len(),
            one_shot.len()
        );
        for piece in [1, 1000, 32 * 1024, 200 * 1024] {
            let mut body = vec![1, 2, 3];
            compressor.start(large.len(), &mut body).unwrap();
            for chunk in large.chunks(piece) {
                compressor.write(chunk, &mut body).unwrap();
            }
            compressor.finish(&mut body).unwrap();
            assert_eq!(body, whole, "pieces of {piece} bytes");
        }
        // A frame given up half-way does not leak into the next one.
        let mut body = Vec::new();
        compressor.start(large.len(), &mut body).unwrap();
        compressor.write(&large[..100_000], &mut body).unwrap();
        compressor.start(large.len(), &mut body).unwrap();
        compressor.write(&large, &mut body).unwrap();
        compressor.finish(&mut body).unwrap();
        assert_eq!(body, whole);
        assert_eq!(zstd::stream::decode_all(whole.as_slice()).unwrap(), large);
        // An empty frame is a valid one.
        compressor.start(0, &mut body).unwrap();
        compressor.finish(&mut body).unwrap();
        assert!(zstd::stream::decode_all(body.as_slice())
            .unwrap()
            .is_empty());
    }
}
