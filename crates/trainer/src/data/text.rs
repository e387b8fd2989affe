//! `dataset = "text"`: a UTF-8 file cut into byte or character tokens for
//! next-token prediction. The file's tail (`test_fraction`) is held out;
//! each split is cut into windows of `context + 1` tokens overlapping by
//! one, so a sample is `context` tokens and its `context` targets (each
//! token's successor), and every token of a split is predicted once per
//! epoch.

use super::{corrupt, DataError, Split};
use crate::config::Tokens;
use std::collections::BTreeSet;
use std::path::Path;

/// Labels are bytes.
const MAX_VOCAB: usize = 256;

/// The cut text.
pub(crate) struct Text {
    pub(crate) train: Split,
    pub(crate) test: Split,
    pub(crate) vocab: usize,
    /// For `char` tokens, the character of each token.
    pub(crate) chars: Option<Vec<String>>,
}

/// Reads and cuts the file at `path`.
pub(crate) fn load(
    path: &Path,
    tokens: Tokens,
    context: usize,
    test_fraction: f64,
) -> Result<Text, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    // Each token becomes an f32 and a label byte: 5 bytes a token.
    if len.saturating_mul(5) > crate::memory::available_bytes() {
        return Err(corrupt(
            path,
            format!("{len} bytes: more than this machine's memory holds as tokens"),
        ));
    }
    // Checked as UTF-8 whatever the tokens; byte tokens are then the bytes
    // themselves, not a copy.
    let text = String::from_utf8(std::fs::read(path).map_err(io)?).map_err(|e| {
        corrupt(
            path,
            format!(
                "not UTF-8: invalid byte at offset {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let (ids, vocab, chars) = match tokens {
        Tokens::Byte => (text.into_bytes(), MAX_VOCAB, None),
        Tokens::Char => {
            let set: BTreeSet<char> = text.chars().collect();
            if set.len() > MAX_VOCAB {
                return Err(corrupt(
                    path,
                    format!(
                        "{} distinct characters; char tokens allow {MAX_VOCAB} (use tokens = \"byte\")",
                        set.len()
                    ),
                ));
            }
            let table: Vec<char> = set.into_iter().collect();
            let ids = text
                .chars()
                .map(|c| table.binary_search(&c).expect("from the set") as u8)
                .collect();
            let names = table.iter().map(|c| c.to_string()).collect();
            (ids, table.len(), Some(names))
        }
    };
    let cut = ids.len() - (ids.len() as f64 * test_fraction).round() as usize;
    let (head, tail) = ids.split_at(cut);
    let split = |part: &[u8], which: &str| {
        windows(part, context).ok_or_else(|| {
            corrupt(
                path,
                format!(
                    "its {which} part is {} tokens: too short for one window of context {context} + 1",
                    part.len()
                ),
            )
        })
    };
    Ok(Text {
        train: split(head, "training")?,
        test: split(tail, "held-out")?,
        vocab,
        chars,
    })
}

/// Windows of `context + 1` tokens at stride `context`: inputs and the
/// next tokens. None when not even one fits.
fn windows(ids: &[u8], context: usize) -> Option<Split> {
    let n = ids.len().checked_sub(1)? / context;
    if n == 0 {
        return None;
    }
    let mut s = Split {
        x: Vec::with_capacity(n * context),
        y: Vec::with_capacity(n * context),
        targets: context,
    };
    for w in 0..n {
        let at = w * context;
        s.x.extend(ids[at..at + context].iter().map(|&t| f32::from(t)));
        s.y.extend_from_slice(&ids[at + 1..at + context + 1]);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_predict_each_token_once() {
        let ids: Vec<u8> = (0..10).collect();
        let s = windows(&ids, 3).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.x, vec![0., 1., 2., 3., 4., 5., 6., 7., 8.]);
        assert_eq!(s.y, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(windows(&ids[..3], 3).is_none());
    }
}
