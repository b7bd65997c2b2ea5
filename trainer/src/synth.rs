//! btd's built-in synthetic corpus: deterministic, ASCII, with real structure to learn.
//!
//! The text is *synthetic*: an invented lexicon of pronounceable words (Zipf-distributed), strung
//! into sentences by a first-order word Markov chain (each word prefers a few successors), with
//! capitalisation, commas, sentence punctuation, line breaks and paragraphs. A byte model can learn
//! the spelling of the words, the word-to-word transitions and the punctuation rules, so a trained
//! model gets well below the corpus's unigram entropy; it is used by tests and the demo, never as a
//! stand-in for natural language results.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::TrainError;

/// Largest synthetic corpus btd generates (it is held in memory).
pub const MAX_SYNTHETIC_BYTES: u64 = 1 << 30;

/// Default size of the corpus `btd train` uses without `--data`.
pub const DEFAULT_SYNTHETIC_BYTES: u64 = 1_000_000;

/// Words in the invented lexicon.
const LEXICON: usize = 400;
/// Preferred successors of each word.
const SUCCESSORS: usize = 3;
/// Probability that the next word is one of the current word's preferred successors.
const FOLLOW_P: f64 = 0.7;

const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br",
    "ch", "cl", "dr", "fl", "gr", "pl", "qu", "sh", "sl", "st", "th", "tr", "",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "oo", "ou", "y"];
const CODAS: &[&str] = &["", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck"];

/// Generates exactly `bytes` bytes of the synthetic corpus for `seed`.
pub fn synthetic_corpus(seed: u64, bytes: u64) -> Result<Vec<u8>, TrainError> {
    generate(seed, bytes, None)
}

/// `bytes` bytes of fresh text in the language of the corpus for `seed` (same lexicon and word
/// transitions), drawn with the stream `secret`: an owner's holdout that no worker can generate
/// without the secret.
pub fn synthetic_holdout(seed: u64, secret: u64, bytes: u64) -> Result<Vec<u8>, TrainError> {
    generate(seed, bytes, Some(secret))
}

fn generate(seed: u64, bytes: u64, stream: Option<u64>) -> Result<Vec<u8>, TrainError> {
    if bytes == 0 || bytes > MAX_SYNTHETIC_BYTES {
        return Err(TrainError::Config(format!(
            "synthetic corpus size is {bytes} bytes; use 1..={MAX_SYNTHETIC_BYTES}"
        )));
    }
    let len = usize::try_from(bytes)
        .map_err(|_| TrainError::Config(format!("{bytes} bytes do not fit in memory")))?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6274_645f_7379_6e74); // "btd_synt"
    let lexicon = make_lexicon(&mut rng);
    let zipf = Zipf::new(LEXICON);
    let successors: Vec<[usize; SUCCESSORS]> = (0..LEXICON)
        .map(|_| std::array::from_fn(|_| zipf.sample(&mut rng)))
        .collect();
    if let Some(secret) = stream {
        rng = ChaCha20Rng::seed_from_u64(secret ^ 0x6274_645f_686f_6c64); // "btd_hold"
    }

    let mut out = Vec::with_capacity(len + 128);
    let mut sentences_in_line = 0;
    let mut lines_in_paragraph = 0;
    while out.len() < len {
        let words = rng.gen_range(4..=12);
        let mut w = zipf.sample(&mut rng);
        for i in 0..words {
            let word = lexicon[w].as_bytes();
            if i == 0 {
                out.push(word[0].to_ascii_uppercase());
                out.extend_from_slice(&word[1..]);
            } else {
                out.extend_from_slice(word);
            }
            if i + 1 < words {
                if rng.gen_bool(0.08) {
                    out.push(b',');
                }
                out.push(b' ');
            }
            w = if rng.gen_bool(FOLLOW_P) {
                successors[w][rng.gen_range(0..SUCCESSORS)]
            } else {
                zipf.sample(&mut rng)
            };
        }
        out.push(match rng.gen_range(0..10) {
            0 => b'?',
            1 => b'!',
            _ => b'.',
        });
        sentences_in_line += 1;
        if sentences_in_line >= rng.gen_range(1..=3) {
            sentences_in_line = 0;
            out.push(b'\n');
            lines_in_paragraph += 1;
            if lines_in_paragraph >= rng.gen_range(2..=6) {
                lines_in_paragraph = 0;
                out.push(b'\n');
            }
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    Ok(out)
}

/// `LEXICON` distinct lower-case words of one to three syllables.
fn make_lexicon(rng: &mut ChaCha20Rng) -> Vec<String> {
    let mut words: Vec<String> = Vec::with_capacity(LEXICON);
    while words.len() < LEXICON {
        let syllables = match rng.gen_range(0..10) {
            0..=3 => 1,
            4..=7 => 2,
            _ => 3,
        };
        let mut w = String::new();
        for _ in 0..syllables {
            w.push_str(ONSETS[rng.gen_range(0..ONSETS.len())]);
            w.push_str(VOWELS[rng.gen_range(0..VOWELS.len())]);
            w.push_str(CODAS[rng.gen_range(0..CODAS.len())]);
        }
        if !words.contains(&w) {
            words.push(w);
        }
    }
    words
}

/// Zipf(1) over `0..n` by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (0..n)
            .map(|i| {
                acc += 1.0 / (i as f64 + 1.0);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut ChaCha20Rng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::unigram_entropy_bits;

    #[test]
    fn deterministic_exact_size_ascii() {
        let a = synthetic_corpus(7, 10_000).unwrap();
        let b = synthetic_corpus(7, 10_000).unwrap();
        let c = synthetic_corpus(8, 10_000).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 10_000);
        assert!(a.iter().all(|b| b.is_ascii()));
        // A prefix of a longer corpus is the shorter corpus.
        assert_eq!(&synthetic_corpus(7, 20_000).unwrap()[..10_000], &a[..]);
    }

    #[test]
    fn looks_like_text() {
        let a = synthetic_corpus(0, 50_000).unwrap();
        let text = String::from_utf8(a.clone()).unwrap();
        assert!(text.contains(". "));
        assert!(text.contains('\n'));
        let h = unigram_entropy_bits(&a);
        assert!((3.5..5.0).contains(&h), "unigram entropy {h}");
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(synthetic_corpus(0, 0).is_err());
        assert!(synthetic_corpus(0, MAX_SYNTHETIC_BYTES + 1).is_err());
    }
}
