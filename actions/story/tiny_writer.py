"""A tiny random-weight causal language model for the story writer (a few hundred KB).

``make_tiny_writer(DIR)`` writes a GPT-2 with random weights and a small word-level
tokenizer, loadable by ``TransformersWriter`` (``STORY_WRITER_MODEL=DIR``), so the model
path of the writer runs end to end without downloading anything. Its stories are random
words and punctuation: the weights are random, the code path is the real one.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ("the", "a", "old", "dark", "quiet", "house", "door", "night", "river", "lantern",
         "map", "key", "child", "stranger", "village", "forest", "moon", "storm", "letter",
         "bridge", "found", "opened", "heard", "followed", "waited", "whispered", "ran",
         "slowly", "suddenly", "never", "again", "and", "but", "then", "under", "beyond",
         "she", "he", "they", "it", "was", "were", "to", "of", "in", "with")
PUNCTUATION = (".", "!", "?")


def make_tiny_writer(directory, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    eos, unk = "<|endoftext|>", "[UNK]"  # tokenizer markers (ruff's S106 reads "token")
    vocab = {eos: 0, unk: 1}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    for token in PUNCTUATION:
        vocab.setdefault(token, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos,
                                        unk_token=unk, pad_token=eos)
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_positions=512, n_embd=32, n_layer=2,
                        n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory
