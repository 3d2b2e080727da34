"""Prompts and recipe targets as token ids, the way each model was pretrained: the shared parts
(chat templates, end tokens, fast batch encoding); each model family (`chef_genius.families`)
encodes with them.

One encoding for training, validation, `generate` and `evaluate`:

- seq2seq (T5, FLAN-T5, BART): the tokenizer's own special tokens on both sides (T5: ``... </s>``;
  BART: ``<s> ... </s>``); a prompt cut to the limit keeps its last special token;
- causal with a chat template (SmolLM2-Instruct, Llama-3-Instruct, Qwen...): the prompt is a user
  turn rendered by ``apply_chat_template`` with the generation prompt (the assistant header); the
  target is the assistant's reply ending with the template's end-of-turn token (``<|im_end|>``,
  ``<|eot_id|>``); only the reply is in the loss;
- causal without one (GPT-2, base Llama): the prompt with the tokenizer's special tokens (a BOS
  where the model uses one) and a newline; the target ends with EOS.

A target cut to ``max_target`` tokens gets no end token: a recipe cut mid-step must not teach the
model to stop there. Whether a run uses the chat template is carried by its tokenizer: a run that
switches templates off (``model.chat_template: false``) trains and saves a tokenizer without one
(`drop_chat_template`), so its saved model is prompted as it was trained.
"""

from __future__ import annotations

import contextlib
import os

from chef_genius.errors import UserError

USER_TOKENIZER_SETTING = "CHEF_GENIUS_USER_TOKENIZERS_PARALLELISM"  # TOKENIZERS_PARALLELISM as the user set it

# The version of the target text and its encoding (the serialization, the chat-template rendering,
# the special-token and cutting rules): bump it when any of them changes, so that token caches
# built by an older chef-genius (keyed on it) are not reused.
ENCODING_VERSION = 1

_SENTINEL = "\u2063CHEFGENIUS\u2063"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def drop_chat_template(tokenizer) -> None:
    """Train (and save) this tokenizer without its chat template."""
    tokenizer.chat_template = None


def _eos(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no end-of-sequence token")
    return tokenizer.eos_token_id


def render_user(tokenizer, content: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)


def prompt_tail_tokens(tokenizer) -> int:
    """Tokens the template puts after the user's words (end of turn, assistant header): kept when
    a long prompt is cut."""
    rendered = render_user(tokenizer, _SENTINEL)
    tail = rendered.split(_SENTINEL, 1)[1] if _SENTINEL in rendered else ""
    return len(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else 0


def end_of_turn_id(tokenizer) -> int:
    """The token that ends a target: the chat template's end of the assistant turn, else EOS."""
    if not has_chat_template(tokenizer):
        return _eos(tokenizer)
    turn = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}]
    rendered = tokenizer.apply_chat_template(turn, tokenize=False)
    after = rendered.split(_SENTINEL, 1)[1] if _SENTINEL in rendered else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []
    for token in ids:
        if _is_special(tokenizer, token):
            return token
    return _eos(tokenizer)


def _is_special(tokenizer, token: int) -> bool:
    """A registered special token, or an added token marked special (GGUF conversions register
    only BOS/EOS/UNK/PAD, so a template's <end_of_turn> is often only the latter)."""
    if token in set(getattr(tokenizer, "all_special_ids", []) or []):
        return True
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return bool(getattr(added.get(token), "special", False))


def seq2seq_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """The tokenizer's own special tokens (T5: ... </s>; BART: <s> ... </s>), ending with EOS."""
    eos = _eos(tokenizer)
    encoded = token_ids(tokenizer, texts, add_special_tokens=True)
    return [ids if ids and ids[-1] == eos else ids + [eos] for ids in encoded]


def token_ids(tokenizer, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    """``tokenizer(texts, add_special_tokens=...)["input_ids"]``, the same ids. A fast tokenizer's
    backend encodes the batch itself: transformers turns each text's encoding into a dict of
    lists in Python, which cost as much as the encoding (5 s of 11 s for 188k prompts)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "_tokenizer", None)
    if not _plain_fast(tokenizer) or not hasattr(backend, "encode_batch_fast"):
        return tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    # One text through transformers first: it sets the backend up as every call does (no
    # truncation, no padding, its special-token splitting, input mode).
    tokenizer(texts[:1], add_special_tokens=add_special_tokens)
    return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]


def _plain_fast(tokenizer) -> bool:
    """A fast tokenizer whose call is transformers' own (none of a subclass's text handling)."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return False
    kind = type(tokenizer)
    own = getattr(TokenizersBackend, "_encode_plus", None)  # a transformers without it: the plain call
    return (isinstance(tokenizer, TokenizersBackend) and own is not None and getattr(kind, "_encode_plus", None) is own
            and kind.__call__ is PreTrainedTokenizerBase.__call__)


@contextlib.contextmanager
def tokenizer_threads():
    """The tokenizers library's own threads (all cores) for the block's batch encodings.

    The command line turns them off (``TOKENIZERS_PARALLELISM=false``) so that processes forked
    later (DataLoader workers) neither warn nor use a thread pool they did not inherit; the
    setting is read at each call, so it is on only inside the block, in the process that runs it.
    Use it only where nothing forks inside the block. A user's own TOKENIZERS_PARALLELISM (the
    command line keeps it in CHEF_GENIUS_USER_TOKENIZERS_PARALLELISM) wins; the threads are shared
    out among the ranks of this machine (RAYON_NUM_THREADS, read when the pool first starts).
    """
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    if os.environ.get(USER_TOKENIZER_SETTING, "true").lower() in ("false", "0", "off", "no"):
        yield
        return
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // ranks_here)))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before
