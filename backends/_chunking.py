"""Chunk sizes for the linear cross-entropy mirrors, shared by every backend.

The mirrors take the tokens chunk_size at a time, so the logits they hold at
once are chunk_size x V instead of N x V. Chunks that are too small starve the
matrix multiplications: the weight gradient sums G^T X over a chunk's tokens,
a contraction of length chunk_size. On a 2-core CPU with PyTorch 2.13 and
H = 1024, V = 128256 (float32), that product ran at 46 GFLOP/s with 32-token
chunks, 107 with 128 and 137 with 256, against 111 for the whole batch at
once. The default therefore takes 2^22 // V tokens per chunk (16 MiB of float32
logits) but never fewer than 128, so vocabularies above 32768 get chunks of 128
tokens and more logits: 64 MiB in float32 at V = 128256.
"""

from __future__ import annotations

MIN_DEFAULT_TOKENS = 128
DEFAULT_CHUNK_LOGITS = 1 << 22


def chunk_tokens(num_tokens: int, vocab_size: int, chunk_size: int | None) -> int:
    """Return the tokens per chunk: chunk_size, or the default for None, clipped to [1, num_tokens]."""
    if chunk_size is None:
        chunk_size = max(MIN_DEFAULT_TOKENS, DEFAULT_CHUNK_LOGITS // max(vocab_size, 1))
    return max(1, min(int(chunk_size), int(num_tokens)))
