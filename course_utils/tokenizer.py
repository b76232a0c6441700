"""The course tokenizer: byte-level BPE trained on the course corpus.

Byte-level means any text can be encoded, including notation the tokenizer never saw (it falls back to bytes),
which is what makes the "far domain" experiment honest: new notation costs more tokens, as it would on a real LLM.
"""
from __future__ import annotations

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def syllable_pattern(syllables) -> str:
    """Regex for one syllable of a word made only of `syllables` (with its leading space, if any).

    The lookahead requires the rest of the word to be syllables too, so ordinary words are left whole.
    """
    alt = "|".join(sorted(syllables, key=len, reverse=True))
    return rf" ?(?:{alt})(?=(?:{alt})*(?![a-z]))"


def train_tokenizer(texts, vocab_size: int = 1024, atomic_syllables=None):
    """Train a byte-level BPE on `texts` and wrap it as a transformers tokenizer (saved with save_pretrained).

    `atomic_syllables` (a list of syllables, e.g. world's) splits every invented name into its syllables before
    BPE, so a name the model never saw is still a short sequence of familiar tokens: reading a new fact from
    the context is then copying 2 known tokens, not guessing how BPE happened to cut an unseen string.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if atomic_syllables:
        split = pre_tokenizers.Split(Regex(syllable_pattern(atomic_syllables)), "isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, tok.pre_tokenizer])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS.index("<bos>")
    # Like Llama's tokenizer: every encoded text starts with <bos>, so prompts look like training documents.
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        model_max_length=256,
    )
