"""Decoding a Whisper decoder head: one options object (``DecodingOptions``), the scorers a
search adds up (attention, CTC prefix, penalties), greedy / sampled / beam / joint
CTC-attention search, and Whisper's temperature fallback. Above ``model`` (the network,
tokenizer and prompts stay in ``WhisperDecoderHead``), below evaluation and inference."""

from .fallback import compression_ratio, decode_with_fallback, is_silence, needs_fallback
from .options import (COMPRESSION_RATIO_THRESHOLD, CTC_JOINT, CTC_MODES, CTC_RESCORE, GREEDY, LOGPROB_THRESHOLD,
                      NO_SPEECH_THRESHOLD, WHISPER_TEMPERATURES, DecodingOptions)
from .search import beam_search, decode_batch, greedy

__all__ = ["COMPRESSION_RATIO_THRESHOLD", "CTC_JOINT", "CTC_MODES", "CTC_RESCORE", "GREEDY", "LOGPROB_THRESHOLD",
           "NO_SPEECH_THRESHOLD", "WHISPER_TEMPERATURES", "DecodingOptions", "beam_search", "compression_ratio",
           "decode_batch", "decode_with_fallback", "greedy", "is_silence", "needs_fallback"]
