"""A tiny random Whisper-shaped model in a transformers folder, for tests that must not need
the real weights: a byte-level BPE tokenizer trained on a few sentences, with Whisper's
special tokens after the text tokens (as in Whisper's vocabulary), and a 2+2-layer model."""

from __future__ import annotations

from pathlib import Path

TEXT = ["set an alarm for seven am", "what is the weather like today", "play some music please",
        "the quick brown fox jumps over the lazy dog", "hello world this is a test"]
LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pt"]
SPECIALS = (["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{lang}|>" for lang in LANGUAGES]
            + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
               "<|notimestamps|>"])


def make_tiny_whisper(folder: str | Path, d_model: int = 32, layers: int = 2, vocab: int = 300,
                      n_mels: int = 80, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizerFast

    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return folder
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT * 20, trainers.BpeTrainer(
        vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens(SPECIALS)
    fast = WhisperTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(str(folder))
    ids = fast.convert_tokens_to_ids
    # vocab_size below Whisper's multilingual 51,865: the model counts as English-only unless
    # told otherwise, so tests set `multilingual` through the vocabulary size they need.
    config = WhisperConfig(vocab_size=len(fast), num_mel_bins=n_mels, d_model=d_model,
                           encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
                           max_source_positions=1500, max_target_positions=64,
                           decoder_start_token_id=ids("<|startoftranscript|>"), eos_token_id=ids("<|endoftext|>"),
                           pad_token_id=ids("<|endoftext|>"), bos_token_id=ids("<|endoftext|>"))
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(config).save_pretrained(str(folder), safe_serialization=True)
    return folder
