"""Write ``workersim/tokenizer/``: a tiny HuggingFace tokenizer folder that the simulator advertises as
its model path (``/model_info``, ``/get_server_info``), for routers that load the worker's tokenizer
(sglang-router). A WordLevel model over a few hundred words, whitespace pre-tokenizer, ``[UNK]`` for the
rest; ChatML-style special tokens and chat template. It does not reproduce the simulator's own token ids
(those come from ``workersim.tokens``); it only has to load and count roughly.

    python -m workersim.make_tokenizer            # rewrites the folder next to this file
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from workersim.tokens import OUTPUT_WORDS

SPECIAL_TOKENS = ("[UNK]", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "[PAD]")

COMMON_WORDS_TEXT = """
a about above across after again against all also always am an and another any are around as ask at away
back be because been before being below best better between both but by call can code could data day did
do does done down each end even every few file find first for from function get give go good got great had
has have he her here him his how i if in into is it its just know last let like line list long look made
make many may me might more most much must my need never new next no not now number of off old on one only
open or other our out over own part people place point put read right run said same say see set she should
show since so some state still such system take tell than that the their them then there these they thing
think this those through time to too two under up us use used user value very want was way we well were
what when where which while who why will with work world would write year yes yet you your
request response model token tokens cache prompt worker route router server client stream error result
json http api key query answer message content role assistant tool tools reasoning
"""

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] if message['content'] is string else '' }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_files(max_len: int = 131_072) -> dict[str, dict[str, Any]]:
    vocab: dict[str, int] = {}
    for token in (
        *SPECIAL_TOKENS,
        *OUTPUT_WORDS,
        *COMMON_WORDS_TEXT.split(),
        *(chr(c) for c in range(ord("a"), ord("z") + 1)),
        *(str(d) for d in range(10)),
        *".,;:!?'\"()[]{}<>/\\|-_+=*&^%$#@~`",
    ):
        vocab.setdefault(token, len(vocab))
    added = [
        {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for t in SPECIAL_TOKENS
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "<|im_end|>",
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": len(vocab),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "max_position_embeddings": max_len,
        "bos_token_id": vocab["<s>"],
        "eos_token_id": vocab["<|im_end|>"],
        "pad_token_id": vocab["[PAD]"],
        "torch_dtype": "float32",
        "_comment": "workersim, the worker simulator: no weights; only the tokenizer is real",
    }
    return {"tokenizer.json": tokenizer, "tokenizer_config.json": tokenizer_config, "config.json": config}


def write(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in build_files().items():
        (folder / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    write(Path(args[0]) if args else Path(__file__).resolve().parent / "tokenizer")


if __name__ == "__main__":
    main()
