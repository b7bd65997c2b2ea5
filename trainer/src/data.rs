//! Corpora: a UTF-8 text file identified by its SHA-256, or the built-in synthetic corpus; the fixed
//! train/validation split; training batches.

use std::io::Read;
use std::path::Path;

use btd_protocol::program::Dataset;
use btd_protocol::Digest;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::synth::synthetic_corpus;
use crate::TrainError;

/// Largest corpus file btd reads (it is held in memory).
pub const MAX_CORPUS_BYTES: u64 = 4 << 30;

/// The validation split is the last `1 / VAL_FRACTION_INV` of the corpus (10%), the rest trains.
const VAL_FRACTION_INV: usize = 10;

/// Where a corpus came from: what a checkpoint records and a verifier re-creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DataSource {
    /// A text file with this SHA-256.
    File {
        /// SHA-256 of the file's bytes.
        sha256: Digest,
    },
    /// btd's synthetic corpus (see [`crate::synth`]).
    Synthetic {
        /// Generator seed.
        seed: u64,
        /// Size in bytes.
        bytes: u64,
    },
}

impl DataSource {
    /// The protocol's [`Dataset`] naming the same data.
    pub fn to_dataset(&self) -> Dataset {
        match *self {
            DataSource::File { sha256 } => Dataset::File { sha256 },
            DataSource::Synthetic { seed, bytes } => Dataset::Synthetic { seed, bytes },
        }
    }

    /// One line for people, e.g. `synthetic corpus (seed 0, 1000000 bytes)`.
    pub fn describe(&self) -> String {
        match self {
            DataSource::File { sha256 } => format!("file sha256 {sha256}"),
            DataSource::Synthetic { seed, bytes } => {
                format!("built-in synthetic corpus (seed {seed}, {bytes} bytes)")
            }
        }
    }
}

/// A corpus in memory with its fixed split.
#[derive(Debug, Clone)]
pub struct Corpus {
    bytes: Vec<u8>,
    split: usize,
    source: DataSource,
    sha256: Digest,
}

impl Corpus {
    /// A corpus from bytes already in memory; they must be UTF-8 text.
    pub fn from_text_bytes(bytes: Vec<u8>, source: DataSource) -> Result<Self, TrainError> {
        if let Err(e) = std::str::from_utf8(&bytes) {
            return Err(TrainError::Data(format!(
                "the corpus is not UTF-8 text (invalid byte at offset {}); btd trains on UTF-8 \
                 text files",
                e.valid_up_to()
            )));
        }
        let split = bytes.len() - bytes.len() / VAL_FRACTION_INV;
        let sha256 = Digest::of(&bytes);
        Ok(Self {
            bytes,
            split,
            source,
            sha256,
        })
    }

    /// The synthetic corpus for `seed` and `bytes`.
    pub fn synthetic(seed: u64, bytes: u64) -> Result<Self, TrainError> {
        Self::from_text_bytes(
            synthetic_corpus(seed, bytes)?,
            DataSource::Synthetic { seed, bytes },
        )
    }

    /// Reads a text file; with `expected`, refuses a file whose SHA-256 differs.
    pub fn from_file(path: &Path, expected: Option<Digest>) -> Result<Self, TrainError> {
        let io = |e: std::io::Error| TrainError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_CORPUS_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_CORPUS_BYTES {
            return Err(TrainError::Data(format!(
                "{} is larger than {MAX_CORPUS_BYTES} bytes, the most btd loads",
                path.display()
            )));
        }
        let sha256 = Digest::of(&bytes);
        if let Some(want) = expected {
            if want != sha256 {
                return Err(TrainError::DigestMismatch {
                    path: path.display().to_string(),
                    expected: want,
                    actual: sha256,
                });
            }
        }
        Self::from_text_bytes(bytes, DataSource::File { sha256 })
    }

    /// The corpus a program's dataset names: the synthetic one is generated; a file one is read from
    /// `file` and must match the digest (no file given is an error that says so).
    pub fn for_dataset(dataset: &Dataset, file: Option<&Path>) -> Result<Self, TrainError> {
        match dataset {
            Dataset::Synthetic { seed, bytes } => Self::synthetic(*seed, *bytes),
            Dataset::File { sha256 } => match file {
                Some(path) => Self::from_file(path, Some(*sha256)),
                None => Err(TrainError::Data(format!(
                    "the task trains on the file with sha256 {sha256}; give its path"
                ))),
            },
        }
    }

    /// The corpus a [`DataSource`] names (see [`Corpus::for_dataset`]).
    pub fn for_source(source: &DataSource, file: Option<&Path>) -> Result<Self, TrainError> {
        Self::for_dataset(&source.to_dataset(), file)
    }

    /// Where it came from.
    pub fn source(&self) -> &DataSource {
        &self.source
    }

    /// SHA-256 of all its bytes (for a file corpus, the file's digest).
    pub fn sha256(&self) -> Digest {
        self.sha256
    }

    /// Total size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The training split: all but the last 10%.
    pub fn train(&self) -> &[u8] {
        &self.bytes[..self.split]
    }

    /// The validation split: the last 10%.
    pub fn val(&self) -> &[u8] {
        &self.bytes[self.split..]
    }

    /// Checks both splits hold at least one window of `block_size + 1` bytes.
    pub fn check_fits(&self, block_size: usize) -> Result<(), TrainError> {
        let need = block_size + 1;
        if self.train().len() < need || self.val().len() < need {
            return Err(TrainError::Data(format!(
                "the corpus has {} bytes: too small for a context of {block_size} (each of the \
                 90% train and 10% validation splits needs at least {need} bytes)",
                self.len()
            )));
        }
        Ok(())
    }
}

/// Draws training batches at random offsets of the training split from a seeded ChaCha20 stream.
#[derive(Debug)]
pub struct Batcher {
    rng: ChaCha20Rng,
    batch_size: usize,
    block_size: usize,
}

impl Batcher {
    /// A batcher whose stream depends only on `seed`.
    pub fn new(seed: u64, batch_size: usize, block_size: usize) -> Self {
        Self {
            rng: ChaCha20Rng::from_seed(crate::init::derive_seed(seed, "batches")),
            batch_size,
            block_size,
        }
    }

    /// The next `(inputs, targets)`, each `(batch_size, block_size)` of `u32` byte values.
    pub fn next_batch(
        &mut self,
        train: &[u8],
        device: &Device,
    ) -> Result<(Tensor, Tensor), TrainError> {
        let (b, t) = (self.batch_size, self.block_size);
        let max_start = train.len().saturating_sub(t + 1);
        let mut x = Vec::with_capacity(b * t);
        let mut y = Vec::with_capacity(b * t);
        for _ in 0..b {
            let s = self.rng.gen_range(0..=max_start);
            x.extend(train[s..s + t].iter().map(|&c| u32::from(c)));
            y.extend(train[s + 1..s + t + 1].iter().map(|&c| u32::from(c)));
        }
        Ok((
            Tensor::from_vec(x, (b, t), device)?,
            Tensor::from_vec(y, (b, t), device)?,
        ))
    }
}

/// Shannon entropy of the byte distribution of `bytes`, in bits per byte: what a model that ignores
/// context entirely could at best achieve.
pub fn unigram_entropy_bits(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_fixed() {
        let c = Corpus::synthetic(1, 1000).unwrap();
        assert_eq!(c.train().len(), 900);
        assert_eq!(c.val().len(), 100);
        assert!(c.check_fits(64).is_ok());
        assert!(c.check_fits(100).is_err());
    }

    #[test]
    fn file_digest_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.txt");
        std::fs::write(&path, "hello world\n").unwrap();
        let c = Corpus::from_file(&path, None).unwrap();
        assert_eq!(c.sha256(), Digest::of(b"hello world\n"));
        assert!(Corpus::from_file(&path, Some(c.sha256())).is_ok());
        let e = Corpus::from_file(&path, Some(Digest([0; 32]))).unwrap_err();
        assert!(matches!(e, TrainError::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains("sha256"), "{e}");
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        let e = Corpus::from_file(&path, None).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        let e = Corpus::for_dataset(&Dataset::File { sha256: c.sha256() }, None).unwrap_err();
        assert!(e.to_string().contains("give its path"), "{e}");
    }

    #[test]
    fn batches_are_seeded() {
        let c = Corpus::synthetic(1, 5000).unwrap();
        let dev = Device::Cpu;
        let take = |seed| {
            let mut b = Batcher::new(seed, 4, 8);
            let (x, y) = b.next_batch(c.train(), &dev).unwrap();
            (x.to_vec2::<u32>().unwrap(), y.to_vec2::<u32>().unwrap())
        };
        let (x1, y1) = take(3);
        assert_eq!((x1.clone(), y1.clone()), take(3));
        assert_ne!(x1, take(4).0);
        // Targets are inputs shifted by one.
        assert_eq!(x1[0][1..], y1[0][..7]);
    }

    #[test]
    fn entropy() {
        assert_eq!(unigram_entropy_bits(b"aaaa"), 0.0);
        assert!((unigram_entropy_bits(b"abab") - 1.0).abs() < 1e-12);
    }
}
