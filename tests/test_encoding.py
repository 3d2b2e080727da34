"""Inputs as each model was trained: chat turns, special tokens, end tokens, truncation."""

from __future__ import annotations

import numpy as np
import pytest

from chef_genius.dataset.collate import Collator, tokenize_examples
from chef_genius.encoding import (
    drop_chat_template,
    end_of_turn_id,
)
from chef_genius.families import CAUSAL, SEQ2SEQ
from chef_genius.losses import IGNORE_INDEX
from tests.harness.tiny_causal import chat_tokenizer

TEXTS = ["Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps: Boil the water. | Add the carrots.",
         "Create a recipe: tomato soup with basil", "Title: Salad || Ingredients: lettuce || Steps: Toss."] * 30


@pytest.fixture(scope="module")
def chat():
    return chat_tokenizer(TEXTS)


def test_chat_prompt_is_a_user_turn_with_the_assistant_header(chat):
    [ids] = CAUSAL.encode_sources(chat, ["Create a recipe: tomato soup"], 128)
    rendered = chat.apply_chat_template([{"role": "user", "content": "Create a recipe: tomato soup"}],
                                        add_generation_prompt=True, tokenize=False)
    assert chat.decode(ids) == rendered
    assert rendered.endswith("<|im_start|>assistant\n")


def test_chat_target_ends_with_the_end_of_turn_token_and_a_cut_one_does_not(chat):
    end = chat.convert_tokens_to_ids("<|im_end|>")
    assert end_of_turn_id(chat) == end and end != chat.eos_token_id
    assert CAUSAL.stop_ids(chat) == [end, chat.eos_token_id]
    [full] = CAUSAL.encode_targets(chat, [TEXTS[0]], 512)
    assert full[-1] == end and chat.decode(full[:-1]) == TEXTS[0]
    [cut] = CAUSAL.encode_targets(chat, [TEXTS[0]], 8)
    assert len(cut) == 8 and end not in cut  # a recipe cut mid-step must not teach the model to stop there


def test_a_long_chat_prompt_keeps_its_assistant_header(chat):
    [ids] = CAUSAL.encode_sources(chat, ["tomato " * 200], 40)
    assert len(ids) == 40
    assert chat.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_loss_is_only_on_the_reply(chat):
    examples = tokenize_examples(chat, ["Create a recipe: soup"], [TEXTS[0]], 128, 512, CAUSAL)
    batch = Collator(examples, chat.pad_token_id, CAUSAL)([0])
    source, target = examples.source(0), examples.target(0)
    labels = batch["labels"][0].tolist()
    assert labels[:len(source)] == [IGNORE_INDEX] * len(source)
    assert labels[len(source):len(source) + len(target)] == target.tolist()
    assert batch["input_ids"][0, :len(source)].tolist() == source.tolist()


def test_without_a_template_the_prompt_is_plain_text(chat):
    plain = chat_tokenizer(TEXTS, template=None)
    [ids] = CAUSAL.encode_sources(plain, ["Create a recipe: soup"], 128)
    assert plain.decode(ids) == "Create a recipe: soup\n"
    assert CAUSAL.encode_targets(plain, ["Boil."], 64)[0][-1] == plain.eos_token_id
    copy = chat_tokenizer(TEXTS)
    drop_chat_template(copy)
    assert CAUSAL.encode_sources(copy, ["x"], 32) == CAUSAL.encode_sources(plain, ["x"], 32)


def test_bos_is_kept_for_causal_and_bart_style_seq2seq_tokenizers():
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    raw = chat_tokenizer(TEXTS, template=None).backend_tokenizer
    bos, eos = raw.token_to_id("<|im_start|>"), raw.token_to_id("<|endoftext|>")
    # A Llama-style tokenizer that prepends BOS: the causal prompt starts with it.
    raw.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
    llama = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<pad>",
                                    bos_token="<|im_start|>")
    [ids] = CAUSAL.encode_sources(llama, ["soup"], 32)
    assert ids[0] == bos and ids[-1] != eos
    # BART: <s> ... </s> on both sides, and a cut prompt keeps its </s>.
    raw.post_processor = processors.TemplateProcessing(single="<|im_start|> $A <|endoftext|>",
                                                       special_tokens=[("<|im_start|>", bos), ("<|endoftext|>", eos)])
    bart = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<pad>",
                                   bos_token="<|im_start|>")
    [source] = SEQ2SEQ.encode_sources(bart, ["tomato soup " * 30], 10)
    assert len(source) == 10 and source[0] == bos and source[-1] == eos
    [target] = SEQ2SEQ.encode_targets(bart, ["Boil."], 64)
    assert target[0] == bos and target[-1] == eos and target.count(eos) == 1


def test_t5_style_seq2seq_ids_are_unchanged(t5_tokenizer):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=t5_tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    plain = tok("Boil the water", add_special_tokens=False)["input_ids"]
    assert SEQ2SEQ.encode_sources(tok, ["Boil the water"], 64) == [plain + [tok.eos_token_id]]
    assert SEQ2SEQ.encode_targets(tok, ["Boil the water"], 64) == [plain + [tok.eos_token_id]]
    assert SEQ2SEQ.encode_targets(tok, ["Boil the water"], 2) == [plain[:2]]
    assert np.all(np.asarray(SEQ2SEQ.encode_sources(tok, ["Boil the water " * 50], 16)[0][-1:]) == 1)
