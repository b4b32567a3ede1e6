//! Line generation and datagram packing.
//!
//! Datagrams are built once, before the clock starts; per batch only fixed-width digit
//! fields (zero-padded `seq=...i` and the timestamp) are rewritten in place.

use anyhow::{bail, Context, Result};

/// Width of the zero-padded sequence field; 10^12 lines is far beyond any run.
pub const SEQ_WIDTH: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Precision {
    Ns,
    Ms,
    S,
}

impl Precision {
    /// Digits of a current timestamp in this unit (fixed until year 2286).
    pub fn width(self) -> usize {
        match self {
            Precision::Ns => 19,
            Precision::Ms => 13,
            Precision::S => 10,
        }
    }
    pub fn from_ns(self, ns: u64) -> u64 {
        match self {
            Precision::Ns => ns,
            Precision::Ms => ns / 1_000_000,
            Precision::S => ns / 1_000_000_000,
        }
    }
    pub fn to_ns(self, v: u64) -> u64 {
        match self {
            Precision::Ns => v,
            Precision::Ms => v.saturating_mul(1_000_000),
            Precision::S => v.saturating_mul(1_000_000_000),
        }
    }
}

/// Where one line sits in a datagram and where its patchable fields are.
#[derive(Debug, Clone, Copy)]
pub struct LineSlot {
    /// Offset of the first seq digit, or `u32::MAX` if the line has none (corpus).
    pub seq_off: u32,
    /// Offset of the first timestamp digit, or `u32::MAX`.
    pub ts_off: u32,
    /// Offset one past the line's `\n`.
    pub end: u32,
}

#[derive(Debug, Clone)]
pub struct Datagram {
    pub buf: Vec<u8>,
    pub lines: Vec<LineSlot>,
}

impl Datagram {
    /// Bytes of the datagram truncated to its first `n` lines.
    pub fn len_for(&self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.lines[n - 1].end as usize
        }
    }
}

/// Writes `v` as exactly `dst.len()` zero-padded decimal digits (high digits dropped).
#[inline]
pub fn write_digits(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Precomputes the timestamp digits once per batch and copies them into every line.
pub fn patch(d: &mut Datagram, first_seq: u64, ts_digits: &[u8], n: usize) {
    let buf = &mut d.buf;
    for (i, s) in d.lines.iter().take(n).enumerate() {
        if s.seq_off != u32::MAX {
            let o = s.seq_off as usize;
            write_digits(&mut buf[o..o + SEQ_WIDTH], first_seq + i as u64);
        }
        if s.ts_off != u32::MAX {
            let o = s.ts_off as usize;
            buf[o..o + ts_digits.len()].copy_from_slice(ts_digits);
        }
    }
}

const MEASUREMENTS: &[(&str, &[&str])] = &[
    (
        "cpu",
        &[
            "usage_user",
            "usage_system",
            "usage_idle",
            "usage_iowait",
            "usage_steal",
            "usage_nice",
        ],
    ),
    (
        "mem",
        &[
            "used_percent",
            "available_percent",
            "cached",
            "buffered",
            "free",
            "used",
        ],
    ),
    (
        "disk",
        &[
            "used_percent",
            "inodes_used",
            "free",
            "total",
            "used",
            "inodes_free",
        ],
    ),
    (
        "net",
        &[
            "bytes_recv",
            "bytes_sent",
            "packets_recv",
            "packets_sent",
            "err_in",
            "drop_in",
        ],
    ),
    (
        "diskio",
        &[
            "reads",
            "writes",
            "read_bytes",
            "write_bytes",
            "io_time",
            "iops_in_progress",
        ],
    ),
    (
        "system",
        &["load1", "load5", "load15", "n_cpus", "n_users", "uptime_f"],
    ),
];

const REGIONS: &[&str] = &["eu-west-1", REGION_US_EAST, "ap-south-1", "us-west-2"];

/// The name of the generator's measurement number `m` (of `--measurements`):
/// `cpu`, `mem`, `disk`, `net`, `diskio`, `system`, then the same with a
/// number (`cpu1`, …). `verify --rules` writes its rules from these.
pub fn measurement_name(m: usize) -> String {
    let base = MEASUREMENTS[m % MEASUREMENTS.len()].0;
    match m / MEASUREMENTS.len() {
        0 => base.to_string(),
        k => format!("{base}{k}"),
    }
}

/// A region the generator puts in the `region` tag (one series in four).
pub const REGION_US_EAST: &str = "us-east-1";

/// Synthetic telegraf-like line generator.
pub struct Synth {
    pub measurements: usize,
    pub series: usize,
    pub fields: usize,
    pub precision: Precision,
    rng: u64,
}

impl Synth {
    pub fn new(
        measurements: usize,
        series: usize,
        fields: usize,
        precision: Precision,
        seed: u64,
    ) -> Self {
        Synth {
            measurements: measurements.max(1),
            series: series.max(1),
            fields: fields.max(1),
            precision,
            rng: seed | 1,
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: cheap, deterministic, good enough for field values.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Appends line number `k` to `out`; returns (seq offset, ts offset) relative to `out` start.
    pub fn line(&mut self, k: usize, out: &mut Vec<u8>) -> (usize, usize) {
        use std::io::Write;
        let m = k % self.measurements;
        let s = (k / self.measurements) % self.series;
        let fnames = MEASUREMENTS[m % MEASUREMENTS.len()].1;
        out.extend_from_slice(measurement_name(m).as_bytes());
        let _ = write!(
            out,
            ",host=host{:04},region={},cpu=cpu{} ",
            s,
            REGIONS[s % REGIONS.len()],
            s % 8
        );
        for f in 0..self.fields {
            let v = self.next_rand() % 10_000;
            let name = fnames[f % fnames.len()];
            if f >= fnames.len() {
                let _ = write!(
                    out,
                    "{name}{}={}.{:02},",
                    f / fnames.len(),
                    v / 100,
                    v % 100
                );
            } else {
                let _ = write!(out, "{name}={}.{:02},", v / 100, v % 100);
            }
        }
        out.extend_from_slice(b"seq=");
        let seq_off = out.len();
        out.extend(std::iter::repeat_n(b'0', SEQ_WIDTH));
        out.extend_from_slice(b"i ");
        let ts_off = out.len();
        let ts = self.precision.from_ns(crate::util::now_ns());
        let w = self.precision.width();
        out.extend(std::iter::repeat_n(b'0', w));
        write_digits(&mut out[ts_off..ts_off + w], ts);
        out.push(b'\n');
        (seq_off, ts_off)
    }
}

/// The non-empty lines of the corpus file at `path`, each with its newline.
fn read_corpus(path: &str) -> Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path).with_context(|| format!("reading corpus {path}"))?;
    let lines: Vec<Vec<u8>> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut v = l.to_vec();
            v.push(b'\n');
            v
        })
        .collect();
    if lines.is_empty() {
        bail!("corpus {path} has no lines");
    }
    Ok(lines)
}

/// Source of lines for packing.
pub enum LineSource {
    Synth(Synth),
    Corpus { lines: Vec<Vec<u8>>, next: usize },
}

impl LineSource {
    /// Appends one line; returns its slot offsets relative to the start of `out`.
    fn push_line(&mut self, k: usize, out: &mut Vec<u8>) -> (u32, u32) {
        match self {
            LineSource::Synth(s) => {
                let (a, b) = s.line(k, out);
                (a as u32, b as u32)
            }
            LineSource::Corpus { lines, next } => {
                out.extend_from_slice(&lines[*next % lines.len()]);
                *next += 1;
                (u32::MAX, u32::MAX)
            }
        }
    }

    /// Builds `count` datagrams, each packed with whole lines up to `payload` bytes
    /// (at least one line, even if it alone is longer).
    pub fn build(&mut self, count: usize, payload: usize, k0: usize) -> Vec<Datagram> {
        self.pack(count, usize::MAX, payload, k0)
    }

    /// The corpus file at `path` packed once, in order: every line of the
    /// file in exactly one datagram.
    pub fn corpus_pass(path: &str, payload: usize) -> Result<Vec<Datagram>> {
        let lines = read_corpus(path)?;
        let n = lines.len();
        Ok(LineSource::Corpus { lines, next: 0 }.pack(usize::MAX, n, payload, 0))
    }

    /// Up to `count` datagrams holding up to `max_lines` lines in all.
    fn pack(&mut self, count: usize, max_lines: usize, payload: usize, k0: usize) -> Vec<Datagram> {
        let mut out = Vec::with_capacity(count.min(1 << 16));
        let mut k = k0;
        let mut taken = 0usize;
        let mut line = Vec::with_capacity(256);
        let mut pending: Option<(Vec<u8>, u32, u32)> = None;
        while out.len() < count && (taken < max_lines || pending.is_some()) {
            let mut d = Datagram {
                buf: Vec::with_capacity(payload),
                lines: Vec::new(),
            };
            loop {
                let (l, so, to) = match pending.take() {
                    Some(p) => p,
                    None if taken == max_lines => break,
                    None => {
                        line.clear();
                        let (so, to) = self.push_line(k, &mut line);
                        k += 1;
                        taken += 1;
                        (line.clone(), so, to)
                    }
                };
                if !d.lines.is_empty() && d.buf.len() + l.len() > payload {
                    pending = Some((l, so, to));
                    break;
                }
                let base = d.buf.len() as u32;
                d.buf.extend_from_slice(&l);
                d.lines.push(LineSlot {
                    seq_off: if so == u32::MAX { so } else { base + so },
                    ts_off: if to == u32::MAX { to } else { base + to },
                    end: d.buf.len() as u32,
                });
                if d.buf.len() >= payload {
                    break;
                }
            }
            out.push(d);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn pack_and_patch() {
        let mut src = LineSource::Synth(Synth::new(2, 10, 3, Precision::Ns, 7));
        let mut ds = src.build(4, 1400, 0);
        for d in &ds {
            assert!(d.buf.len() <= 1400);
            assert_eq!(*d.buf.last().unwrap(), b'\n');
        }
        let ts = b"1700000000123456789";
        let n = ds[0].lines.len();
        patch(&mut ds[0], 123, ts, n);
        let s = String::from_utf8(ds[0].buf.clone()).unwrap();
        let first = s.lines().next().unwrap();
        assert!(first.starts_with("cpu,host=host0000,region=eu-west-1,cpu=cpu0 usage_user="));
        assert!(
            first.ends_with(",seq=000000000123i 1700000000123456789"),
            "{first}"
        );
        let second = s.lines().nth(1).unwrap();
        assert!(second.contains("seq=000000000124i"));
    }

    #[test]
    fn a_corpus_pass_holds_every_line_once_in_order() {
        let path = std::env::temp_dir().join(format!("sluice-corpus-{}.lp", std::process::id()));
        let text: String = (0..100_000).map(|i| format!("m,k=v{i} f={i}i\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let pass = LineSource::corpus_pass(path.to_str().unwrap(), 1400).unwrap();
        std::fs::remove_file(&path).unwrap();
        let sent: Vec<u8> = pass.iter().flat_map(|d| d.buf.iter().copied()).collect();
        assert_eq!(String::from_utf8(sent).unwrap(), text);
        assert_eq!(pass.iter().map(|d| d.lines.len()).sum::<usize>(), 100_000);
        assert!(pass.iter().all(|d| d.buf.len() <= 1400));
        assert!(pass.len() > 1024, "more than the synthetic pool's cap");
    }
}
