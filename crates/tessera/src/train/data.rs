//! Language-model data: tokenized text split into train/validation, packed into blocks.

use crate::tokenizer::Tokenizer;
use crate::util::rng::Rng;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Token streams for training and validation, with the character count of the validation text.
#[derive(Clone, Debug)]
pub struct TokenData {
    /// Training tokens (first of them is EOS, marking the document start).
    pub train: Vec<u32>,
    /// Validation tokens (first of them is EOS).
    pub val: Vec<u32>,
    /// Characters in the validation text.
    pub val_chars: usize,
}

/// Encode text in paragraph-sized pieces (the tokenizer never merges across "\n\n" anyway).
pub fn encode_long(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut ids = Vec::with_capacity(text.len() / 3);
    let mut start = 0;
    // Cut at paragraph boundaries into pieces of at least 64 KiB.
    while start < text.len() {
        let mut end = (start + 65536).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        if end < text.len() {
            end = match text[end..].find("\n\n") {
                Some(i) => end + i + 2,
                None => text.len(),
            };
        }
        ids.extend(tok.encode(&text[start..end])?);
        start = end;
    }
    Ok(ids)
}

/// Split `text` at a line boundary: the first part for training, the last `val_fraction` for validation.
pub fn split_text(text: &str, val_fraction: f64) -> (&str, &str) {
    let mut cut = ((text.len() as f64) * (1.0 - val_fraction)) as usize;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if let Some(i) = text[..cut].rfind('\n') {
        if i > 0 {
            cut = i + 1;
        }
    }
    text.split_at(cut)
}

impl TokenData {
    /// Split `text` at a line boundary so the last `val_fraction` becomes validation, and tokenize both.
    pub fn from_text(tok: &Tokenizer, text: &str, val_fraction: f64, eos: u32) -> Result<Self> {
        if text.trim().is_empty() {
            return Err(Error::Input("the training text is empty".into()));
        }
        let (tr, va) = split_text(text, val_fraction);
        let mut train = vec![eos];
        train.extend(encode_long(tok, tr)?);
        let mut val = vec![eos];
        val.extend(encode_long(tok, va)?);
        Ok(TokenData {
            train,
            val,
            val_chars: va.chars().count(),
        })
    }
}

/// Where the batcher is in its pass over the data (saved in checkpoints for exact resume).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatcherState {
    pub epoch: u64,
    pub cursor: usize,
    pub order: Vec<u32>,
    pub rng: Rng,
}

/// Serves shuffled, non-overlapping blocks of `block + 1` tokens (inputs and shifted targets).
#[derive(Clone, Debug)]
pub struct Batcher {
    block: usize,
    n_blocks: usize,
    pub state: BatcherState,
}

/// Number of non-overlapping windows of `block + 1` tokens with stride `block`.
pub fn num_blocks(n_tokens: usize, block: usize) -> usize {
    if n_tokens < block + 1 {
        0
    } else {
        (n_tokens - 1) / block
    }
}

impl Batcher {
    /// A batcher over `n_tokens` tokens; errors when the corpus is shorter than one block.
    pub fn new(n_tokens: usize, block: usize, seed: u64) -> Result<Self> {
        let n_blocks = num_blocks(n_tokens, block);
        if n_blocks == 0 {
            return Err(Error::Input(format!(
                "the training text has {n_tokens} tokens, fewer than one block of {} (block_size + 1)",
                block + 1
            )));
        }
        let mut b = Batcher {
            block,
            n_blocks,
            state: BatcherState {
                epoch: 0,
                cursor: 0,
                order: Vec::new(),
                rng: Rng::new(seed ^ 0xDA7A),
            },
        };
        b.reshuffle();
        Ok(b)
    }

    fn reshuffle(&mut self) {
        let mut order: Vec<u32> = (0..self.n_blocks as u32).collect();
        self.state.rng.shuffle(&mut order);
        self.state.order = order;
        self.state.cursor = 0;
    }

    /// Restore a saved position (checked against this data).
    pub fn restore(&mut self, state: BatcherState) -> Result<()> {
        if state.order.len() != self.n_blocks || state.cursor > state.order.len() {
            return Err(Error::Input(
                "the saved data position does not match this training text (was the data changed?)"
                    .into(),
            ));
        }
        self.state = state;
        Ok(())
    }

    /// Next batch: (inputs, targets), each (B, T) u32.
    pub fn next_batch(
        &mut self,
        tokens: &[u32],
        batch: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let t = self.block;
        let mut x = Vec::with_capacity(batch * t);
        let mut y = Vec::with_capacity(batch * t);
        for _ in 0..batch {
            if self.state.cursor >= self.state.order.len() {
                self.state.epoch += 1;
                self.reshuffle();
            }
            let start = self.state.order[self.state.cursor] as usize * t;
            self.state.cursor += 1;
            x.extend_from_slice(&tokens[start..start + t]);
            y.extend_from_slice(&tokens[start + 1..start + t + 1]);
        }
        Ok((
            Tensor::from_vec(x, (batch, t), device)?,
            Tensor::from_vec(y, (batch, t), device)?,
        ))
    }

    /// Blocks in one pass.
    pub fn num_blocks(&self) -> usize {
        self.n_blocks
    }
}

/// One epoch's batches of example indices: a seeded shuffle cut into batches, or, when
/// `group`, shuffled groups of 50 batches each sorted by length, then the batches shuffled.
pub fn epoch_batches(lens: &[usize], batch: usize, group: bool, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    rng.shuffle(&mut order);
    if !group {
        return order.chunks(batch).map(<[usize]>::to_vec).collect();
    }
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for mega in order.chunks(batch * 50) {
        let mut m = mega.to_vec();
        m.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        batches.extend(m.chunks(batch).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

/// One epoch's batches of example indices and how far the loop has taken them; a resumed run
/// starts its first epoch past the batches it had done.
#[derive(Clone, Debug, Default)]
pub struct EpochCursor {
    batches: Vec<Vec<usize>>,
    next: usize,
    /// Batches to skip at the start of the next epoch (a resumed run), then 0.
    skip: usize,
    epoch: usize,
}

impl EpochCursor {
    /// A cursor whose first epoch starts at batch `skip` (0: a fresh run).
    pub fn resuming(skip: usize) -> Self {
        EpochCursor {
            skip,
            ..Default::default()
        }
    }

    /// Start epoch `epoch` (1-based) over `batches`.
    pub fn start(&mut self, epoch: usize, batches: Vec<Vec<usize>>) {
        self.next = std::mem::take(&mut self.skip).min(batches.len());
        self.batches = batches;
        self.epoch = epoch;
    }

    /// The epoch's next batch, or `None` when it is used up.
    pub fn next_batch(&mut self) -> Option<&[usize]> {
        let b = self.batches.get(self.next)?;
        self.next += 1;
        Some(b)
    }

    /// The epoch in progress (1-based; 0 before the first).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Where a checkpoint taken now resumes: (epochs completed, batches of the current epoch
    /// done). Mid-epoch, the epoch restarts at the next batch (its order depends on the seed
    /// and the epoch alone); after its last batch, the next epoch starts.
    pub fn resume_point(&self) -> (usize, usize) {
        if self.next >= self.batches.len() {
            (self.epoch, 0)
        } else {
            (self.epoch.saturating_sub(1), self.next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_resumes_where_its_checkpoint_was_taken() {
        let batches = || vec![vec![0], vec![1], vec![2]];
        let mut c = EpochCursor::resuming(0);
        c.start(1, batches());
        assert_eq!(c.next_batch(), Some(&[0][..]));
        assert_eq!(c.resume_point(), (0, 1)); // epoch 1 again, past 1 batch
        let mut r = EpochCursor::resuming(1);
        r.start(1, batches());
        assert_eq!(r.next_batch(), Some(&[1][..]));
        c.next_batch();
        c.next_batch();
        assert_eq!(c.next_batch(), None);
        assert_eq!(c.resume_point(), (1, 0)); // the next epoch from its start
        r.start(2, batches());
        assert_eq!(r.next_batch(), Some(&[0][..]), "the skip applies once");
    }

    #[test]
    fn blocks_cover_data_once_per_epoch_and_resume() {
        let tokens: Vec<u32> = (0..101).collect();
        let mut b = Batcher::new(tokens.len(), 10, 5).unwrap();
        assert_eq!(b.num_blocks(), 10);
        let mut firsts = Vec::new();
        for _ in 0..5 {
            let (x, y) = b.next_batch(&tokens, 2, &Device::Cpu).unwrap();
            let x: Vec<Vec<u32>> = x.to_vec2().unwrap();
            let y: Vec<Vec<u32>> = y.to_vec2().unwrap();
            for (xr, yr) in x.iter().zip(&y) {
                assert_eq!(xr[1..], yr[..9]);
                firsts.push(xr[0]);
            }
        }
        firsts.sort();
        assert_eq!(firsts, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        let saved = b.state.clone();
        let a = b
            .next_batch(&tokens, 3, &Device::Cpu)
            .unwrap()
            .0
            .to_vec2::<u32>()
            .unwrap();
        let mut c = Batcher::new(tokens.len(), 10, 5).unwrap();
        c.restore(saved).unwrap();
        let d = c
            .next_batch(&tokens, 3, &Device::Cpu)
            .unwrap()
            .0
            .to_vec2::<u32>()
            .unwrap();
        assert_eq!(a, d);
        assert!(Batcher::new(10, 10, 0).is_err());
    }
}
