"""`chef-genius export`: a tiny Llama run with a LoRA adapter written as GGUF and read back by
Transformers' GGUF reader (logits, greedy recipes, tokenizer), the file's layout against
llama.cpp's conventions, q8_0, the Modelfile, --format merged, refusals and no overwriting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from chef_genius.cli import main
from chef_genius.families import CAUSAL
from tests.harness.tiny_causal import CHAT_TEMPLATE, chat_tokenizer, write_tiny_gguf
from tests.test_training import small_config, small_data  # noqa: F401 - fixture

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

TEXTS = ["Title: Soup || Ingredients: 1 cup water | 2 carrots || Steps: Boil the water. | Add the carrots.",
         "Create a recipe: tomato soup with basil, onion and garlic"] * 40
PROBE = "Title: Tomato soup || Ingredients: 2 cups water | 3 carrots, basil <|im_end|> héllo  12"
PROMPTS = ["tomato soup", "carrots with basil and garlic"]
BF16_STEP = 2 ** -7  # one bf16 step, relative: f16 logits agree within it of the largest logit
Q8_TOLERANCE = 0.08  # q8_0 logits agree within 8 % of the largest logit (measured: about 4.6 %)


def _tiny_llama(tokenizer, tie: bool = True, seed: int = 0, spare_ids: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer) + spare_ids, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=tie, initializer_range=0.2,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama base model (GQA, tied embeddings, ChatML template) and a run whose final/ is a
    LoRA adapter on q, k, v and o with non-zero weights, as training saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("export")
    tokenizer = chat_tokenizer(TEXTS)
    base = root / "base"
    _tiny_llama(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    torch.manual_seed(1)
    adapted = get_peft_model(LlamaForCausalLM.from_pretrained(base),
                             LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                        init_lora_weights=False))
    run = root / "run"
    adapted.save_pretrained(run / "final")
    tokenizer.save_pretrained(run / "final")
    return root, base, run


@pytest.fixture(scope="module")
def exported(tiny):
    root, _, run = tiny
    out = root / "f16" / "recipe.gguf"
    out.parent.mkdir()
    assert main(["export", str(run), "--format", "gguf", "--out", str(out)]) == 0
    return out


def _read_back(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _run(run: Path):
    from chef_genius.inference import load_run

    return load_run(run, device="cpu")


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def _greedy(model, tokenizer) -> list[str]:
    from chef_genius.inference import generate

    prompts = [f"Create a recipe: {p}" for p in PROMPTS]
    return [row[0] for row in generate(model, tokenizer, prompts, CAUSAL, "greedy", 48)]


def _fields(path: Path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {name: field.contents() for name, field in reader.fields.items()}


def _tensors(path: Path) -> dict:
    return {t.name: (t.tensor_type.name, np.array(t.data)) for t in gguf.GGUFReader(str(path)).tensors}


def test_f16_round_trip_gives_the_runs_logits_greedy_recipes_and_tokens(tiny, exported):
    _, _, run = tiny
    loaded = _run(run)  # base + adapter, unmerged, float32
    model, tokenizer = _read_back(exported)
    ids = loaded.tokenizer(PROBE)["input_ids"]
    expected, got = _logits(loaded.model, ids), _logits(model, ids)
    scale = expected.abs().max().item()
    assert scale > 1.0  # logits with a spread, so the tolerance means something
    assert (got - expected).abs().max().item() <= BF16_STEP * scale
    assert torch.equal(got.argmax(-1), expected.argmax(-1))
    greedy = _greedy(loaded.model, loaded.tokenizer)
    assert all(len(text) > 20 for text in greedy)
    assert _greedy(model, tokenizer) == greedy
    for text in [PROBE, *TEXTS[:2], "<|im_start|>user\nsoup<|im_end|>\n", "  two  spaces\n\nand ½ cup, 100 °C"]:
        assert tokenizer(text)["input_ids"] == loaded.tokenizer(text)["input_ids"]
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|endoftext|>", "<pad>", None)
    assert tokenizer.chat_template == CHAT_TEMPLATE


def test_the_file_follows_llama_cpps_layout(tiny, exported):
    _, base, _ = tiny
    from transformers import AutoTokenizer

    fields, tensors = _fields(exported), _tensors(exported)
    source = AutoTokenizer.from_pretrained(str(base))
    assert fields["general.architecture"] == "llama" and fields["general.file_type"] == 1  # MOSTLY_F16
    assert {k: fields[f"llama.{k}"] for k in ("block_count", "embedding_length", "feed_forward_length",
                                              "attention.head_count", "attention.head_count_kv",
                                              "rope.dimension_count", "vocab_size", "context_length")} == {
        "block_count": 2, "embedding_length": 64, "feed_forward_length": 128, "attention.head_count": 4,
        "attention.head_count_kv": 2, "rope.dimension_count": 16, "vocab_size": len(source), "context_length": 256}
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    vocab = sorted(source.get_vocab().items(), key=lambda kv: kv[1])
    assert fields["tokenizer.ggml.tokens"] == [t for t, _ in vocab]
    special = {"<|endoftext|>", "<pad>", "<|im_start|>", "<|im_end|>"}
    assert fields["tokenizer.ggml.token_type"] == [3 if t in special else 1 for t, _ in vocab]  # CONTROL, NORMAL
    merges = json.loads(source.backend_tokenizer.to_str())["model"]["merges"]
    assert fields["tokenizer.ggml.merges"] == [" ".join(m) for m in merges]
    ids = source.get_vocab()
    assert fields["tokenizer.ggml.eos_token_id"] == ids["<|endoftext|>"]
    assert fields["tokenizer.ggml.eot_token_id"] == ids["<|im_end|>"]  # the end of turn stops llama.cpp too
    assert fields["tokenizer.ggml.padding_token_id"] == ids["<pad>"]
    assert fields["tokenizer.ggml.add_bos_token"] is False and fields["tokenizer.ggml.add_eos_token"] is False
    assert fields["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert "output.weight" not in tensors  # tied: llama.cpp reads token_embd
    assert len(tensors) == 2 + 2 * 9
    assert {tensors[n][0] for n in tensors if n.endswith("norm.weight")} == {"F32"}
    assert {tensors[n][0] for n in tensors if not n.endswith("norm.weight")} == {"F16"}
    # q and k in llama.cpp's rotary order: convert_hf_to_gguf.py's LlamaModel.permute, written out here.
    merged = _run(tiny[2]).model.merge_and_unload()
    state = merged.state_dict()

    def permute(w: np.ndarray, heads: int) -> np.ndarray:
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    q = state["model.layers.1.self_attn.q_proj.weight"].numpy()
    k = state["model.layers.1.self_attn.k_proj.weight"].numpy()
    np.testing.assert_array_equal(tensors["blk.1.attn_q.weight"][1], permute(q, 4).astype(np.float16))
    np.testing.assert_array_equal(tensors["blk.1.attn_k.weight"][1], permute(k, 2).astype(np.float16))
    assert not np.array_equal(permute(q, 4), q)
    v = state["model.layers.1.self_attn.v_proj.weight"].numpy()
    np.testing.assert_array_equal(tensors["blk.1.attn_v.weight"][1], v.astype(np.float16))


def test_q8_0_is_the_runs_model_rounded_to_q8_0_blocks(tiny, exported):
    root, _, run = tiny
    out = root / "q8" / "recipe.q8_0.gguf"
    out.parent.mkdir()
    assert main(["export", str(run), "--out", str(out), "--outtype", "q8_0"]) == 0
    tensors = _tensors(out)
    assert {tensors[n][0] for n in tensors if not n.endswith("norm.weight")} == {"Q8_0"}
    assert _fields(out)["general.file_type"] == 7  # MOSTLY_Q8_0
    assert out.stat().st_size < 0.7 * exported.stat().st_size
    loaded = _run(run)
    model, tokenizer = _read_back(out)
    ids = loaded.tokenizer(PROBE)["input_ids"]
    expected, got = _logits(loaded.model, ids), _logits(model, ids)
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= Q8_TOLERANCE * scale
    # Exactly the merged run with each 2-D weight rounded through Q8_0 (blocks of 32, one scale each).
    rounded = loaded.model.merge_and_unload()
    with torch.no_grad():
        for parameter in rounded.parameters():
            if parameter.ndim == 2:
                data = parameter.numpy()
                block = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                parameter.copy_(torch.from_numpy(gguf.quants.dequantize(block, gguf.GGMLQuantizationType.Q8_0)
                                                 .reshape(data.shape)))
    torch.testing.assert_close(got, _logits(rounded, ids), rtol=0, atol=1e-4)
    assert _greedy(model, tokenizer) == _greedy(rounded, loaded.tokenizer)


def test_q8_0_keeps_rows_that_blocks_of_32_do_not_divide_in_f16(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer(TEXTS)
    torch.manual_seed(4)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                                         initializer_range=0.2, max_position_embeddings=128)).eval()
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    out = tmp_path / "new" / "folder" / "m.gguf"  # folders are made
    assert main(["export", str(tmp_path / "m"), "--out", str(out), "--outtype", "q8_0"]) == 0
    types = {name: kind for name, (kind, _) in _tensors(out).items()}
    assert types["blk.0.ffn_down.weight"] == "Q8_0"  # rows of 96
    assert types["blk.0.ffn_up.weight"] == types["blk.0.attn_q.weight"] == types["token_embd.weight"] == "F16"
    read, _ = _read_back(out)
    ids = tokenizer(PROBE)["input_ids"]
    expected = _logits(model, ids)
    assert (_logits(read, ids) - expected).abs().max().item() <= Q8_TOLERANCE * expected.abs().max().item()


def test_an_adapters_export_equals_the_export_of_its_merged_model(tiny, exported):
    root, base, run = tiny
    merged = root / "merged"
    assert main(["merge", str(run), "--out", str(merged)]) == 0
    from_merged, from_base = root / "from-merged" / "m.gguf", root / "from-base" / "b.gguf"
    for folder, out in ((merged, from_merged), (base, from_base)):
        out.parent.mkdir()
        assert main(["export", str(folder), "--out", str(out)]) == 0
    ours, theirs, plain = _tensors(exported), _tensors(from_merged), _tensors(from_base)
    assert ours.keys() == theirs.keys() == plain.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name][1], theirs[name][1])
    changed = {n for n in ours if not np.array_equal(ours[n][1], plain[n][1])}
    assert changed == {f"blk.{i}.attn_{p}.weight" for i in range(2) for p in ("q", "k", "v", "output")}


def test_the_modelfile_prompts_as_generate_does(tiny, exported):

    text = (exported.parent / "Modelfile").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("# Ollama Modelfile written by chef-genius export")
    assert lines[1] == "FROM ./recipe.gguf"
    assert [line for line in lines if line.startswith("PARAMETER")] == [
        "PARAMETER temperature 0.7", "PARAMETER top_p 0.9", "PARAMETER top_k 50", "PARAMETER repeat_penalty 1",
        "PARAMETER num_predict 512", 'PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|endoftext|>"']
    assert "10-token run has no Ollama equivalent" in text
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    user = "<|im_start|>user\nCreate a recipe: {{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
    system = "<|im_start|>system\n{{ .System }}<|im_end|>\n" + user
    assert template == f"{{{{ if .System }}}}{system}{{{{ else }}}}{user}{{{{ end }}}}"
    tokenizer = _run(tiny[2]).tokenizer
    for prompt in PROMPTS:  # Ollama's rendering (no system prompt) tokenizes as generate's prompt
        rendered = user.replace("{{ .Prompt }}", prompt)
        [expected] = CAUSAL.encode_sources(tokenizer, [f"Create a recipe: {prompt}"], 512)
        assert tokenizer(rendered, add_special_tokens=False)["input_ids"] == expected


def test_a_full_untied_model_exports_its_output_projection(tmp_path):
    """A full model (no adapter) with an output projection of its own, and embedding rows beyond
    the tokenizer's ids (written as llama.cpp writes them: [PAD<id>], UNUSED)."""
    tokenizer = chat_tokenizer(TEXTS, template=None)
    folder = tmp_path / "full"
    model = _tiny_llama(tokenizer, tie=False, seed=3, spare_ids=3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "full.gguf"
    assert main(["export", str(folder), "--out", str(out)]) == 0
    assert "output.weight" in _tensors(out)
    read, read_tokenizer = _read_back(out)
    ids = tokenizer(PROBE)["input_ids"]
    expected = _logits(model, ids)
    assert (_logits(read, ids) - expected).abs().max().item() <= BF16_STEP * expected.abs().max().item()
    fields = _fields(out)
    assert "tokenizer.chat_template" not in fields
    n = len(tokenizer)
    assert fields["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 3)]
    assert fields["tokenizer.ggml.token_type"][n:] == [5, 5, 5]  # UNUSED
    assert read_tokenizer(PROBE)["input_ids"] == ids
    template = re.search(r'TEMPLATE """(.*?)"""', (tmp_path / "Modelfile").read_text(), re.S).group(1)
    assert template == "Create a recipe: {{ .Prompt }}\n"  # no chat template: the plain prompt and newline


def test_format_merged_writes_a_transformers_folder(tiny, capsys):
    root, _, run = tiny
    from transformers import AutoModelForCausalLM

    out = root / "merged-export"
    assert main(["export", str(run), "--format", "merged", "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", ".chef-genius-model"} <= {
        p.name for p in out.iterdir()}
    loaded = _run(run)
    ids = loaded.tokenizer(PROBE)["input_ids"]
    read = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    # The merged weights: only float rounding apart from base + adapter.
    torch.testing.assert_close(_logits(read, ids), _logits(loaded.model, ids), rtol=0, atol=1e-4)
    capsys.readouterr()
    assert main(["export", str(run), "--format", "merged", "--outtype", "q8_0", "--out", str(root / "x")]) == 2
    assert "--outtype applies to --format gguf only" in capsys.readouterr().err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("chef-genius: error: ")
    return err


def test_a_seq2seq_run_is_refused_in_one_line(tmp_path, capsys, t5_tokenizer):
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=t5_tokenizer, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    folder = tmp_path / "t5"
    T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                        num_heads=4, decoder_start_token_id=0)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert main(["export", str(folder), "--out", str(tmp_path / "t5.gguf")]) == 2
    err = _one_line_error(capsys)
    assert "is a seq2seq model (t5): llama.cpp and Ollama run causal models only" in err
    assert "--format merged" in err
    assert not (tmp_path / "t5.gguf").exists() and not (tmp_path / "Modelfile").exists()


def test_another_architecture_is_refused_in_one_line(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = chat_tokenizer(TEXTS)
    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert main(["export", str(folder), "--out", str(tmp_path / "g.gguf")]) == 2
    assert "is a 'gpt2' model: GGUF export supports Llama-architecture models" in _one_line_error(capsys)
    assert list(tmp_path.glob("*.gguf")) == []


def test_nothing_is_overwritten_without_the_flag_or_that_chef_genius_did_not_write(tiny, tmp_path, capsys):
    _, _, run = tiny
    out = tmp_path / "recipe.gguf"
    out.write_bytes(b"someone else's model")
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert "exists; choose another --out, or pass --overwrite" in _one_line_error(capsys)
    assert main(["export", str(run), "--out", str(out), "--overwrite"]) == 2
    assert "was not written by chef-genius export; not replacing it" in _one_line_error(capsys)
    assert out.read_bytes() == b"someone else's model" and not (tmp_path / "Modelfile").exists()
    out.unlink()
    (tmp_path / "Modelfile").write_text("FROM llama3\n")  # a Modelfile of the user's
    assert main(["export", str(run), "--out", str(out), "--overwrite"]) == 2
    assert "Modelfile: exists and was not written by chef-genius export" in _one_line_error(capsys)
    assert not out.exists() and (tmp_path / "Modelfile").read_text() == "FROM llama3\n"
    (tmp_path / "Modelfile").unlink()
    assert main(["export", str(run), "--out", str(out)]) == 0
    first = out.read_bytes()
    assert main(["export", str(run), "--out", str(out)]) == 2  # ours, but no flag
    _one_line_error(capsys)
    assert main(["export", str(run), "--out", str(out), "--outtype", "q8_0", "--overwrite"]) == 0
    assert out.read_bytes() != first and _fields(out)["general.file_type"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile", "recipe.gguf"]  # no staging files left
    assert main(["export", str(run), "--out", str(tmp_path / "recipe.bin")]) == 2
    assert "must end with .gguf" in _one_line_error(capsys)


def test_llama_cpp_runs_the_file(tiny, exported):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (not built in CI)")
    loaded = _run(tiny[2])
    ids = loaded.tokenizer(PROBE)["input_ids"]
    llm = llama_cpp.Llama(model_path=str(exported), n_ctx=256, logits_all=True, verbose=False, seed=0)
    assert llm.tokenize(PROBE.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    got = torch.tensor(np.array(llm.scores[:len(ids)]), dtype=torch.float32)
    expected = _logits(loaded.model, ids)
    assert (got - expected).abs().max().item() <= 2 * BF16_STEP * expected.abs().max().item()


def test_pre_tokenizers_get_llama_cpps_names():
    from tokenizers import Regex, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from chef_genius.errors import UserError
    from chef_genius.gguf_file import _LLAMA3_REGEX, _QWEN2_REGEX, pre_tokenizer_name

    byte_level = chat_tokenizer(TEXTS)
    assert pre_tokenizer_name(byte_level) == "gpt-2"

    def named(pre) -> str:
        backend = byte_level.backend_tokenizer
        backend.pre_tokenizer = pre
        return pre_tokenizer_name(PreTrainedTokenizerFast(tokenizer_object=backend))

    smollm = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                      pre_tokenizers.ByteLevel(add_prefix_space=False)])  # SmolLM2's tokenizer.json
    assert named(smollm) == "smollm"
    for regex, name in ((_LLAMA3_REGEX, "llama-bpe"), (_QWEN2_REGEX, "qwen2")):
        assert named(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                              pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                       use_regex=False)])) == name
    with pytest.raises(UserError, match="pre-tokenizer \\(Whitespace\\) is not one this GGUF export can name"):
        named(pre_tokenizers.Whitespace())
    with pytest.raises(UserError, match="\\(ByteLevel \\+ prefix space\\) is not one"):
        named(pre_tokenizers.ByteLevel(add_prefix_space=True))
    from tokenizers import Tokenizer, models

    sentencepiece_style = Tokenizer(models.BPE(vocab={"a": 0, "<unk>": 1}, merges=[], byte_fallback=True))
    with pytest.raises(UserError, match="SentencePiece-style BPE \\(byte fallback\\), not byte-level BPE"):
        pre_tokenizer_name(PreTrainedTokenizerFast(tokenizer_object=sentencepiece_style))


def test_a_trained_run_from_a_gguf_base_exports_with_its_templates(tmp_path, small_data, monkeypatch):  # noqa: F811
    """The whole path: `--model tiny.gguf` trained one LoRA step with its own prompt templates, then
    exported; the Modelfile wraps the request in the run's first template, and the file gives the
    run's greedy recipes."""
    from chef_genius.training.trainer import run_training

    monkeypatch.setenv("CHEF_GENIUS_CACHE", str(tmp_path / "cache"))
    base = write_tiny_gguf(tmp_path / "tiny-llama.gguf", TEXTS, hidden=64)
    run = tmp_path / "run"
    run_training(small_config(run, small_data, **{
        "model.name": str(base), "optim.max_steps": 1, "eval.generate_samples": False, "schedule.cosine": False,
        "data.templates": ["Write a recipe for {text}", "Recipe: {text}"]}))
    out = tmp_path / "out" / "run.gguf"
    assert main(["export", str(run), "--out", str(out), "--outtype", "q8_0"]) == 0
    template = re.search(r'TEMPLATE """(.*?)"""', (out.parent / "Modelfile").read_text(), re.S).group(1)
    assert "<|im_start|>user\nWrite a recipe for {{ .Prompt }}<|im_end|>" in template
    loaded = _run(run)
    model, tokenizer = _read_back(out)
    assert tokenizer(PROBE)["input_ids"] == loaded.tokenizer(PROBE)["input_ids"]
    ids = loaded.tokenizer(PROBE)["input_ids"]
    expected = _logits(loaded.model, ids)
    assert (_logits(model, ids) - expected).abs().max().item() <= Q8_TOLERANCE * expected.abs().max().item()


def test_a_tokenizer_that_adds_bos_gets_add_bos_and_a_template_without_it(tmp_path):
    """Llama 3's way: the tokenizer prepends BOS and the chat template writes it too; llama.cpp
    adds it (add_bos_token), so the Modelfile's TEMPLATE leaves it out and the prompt has one BOS."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast


    backend = chat_tokenizer(TEXTS).backend_tokenizer
    bos = backend.token_to_id("<|endoftext|>")  # stands in for <|begin_of_text|>
    backend.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", pair="<|endoftext|> $A $B",
                                                           special_tokens=[("<|endoftext|>", bos)])
    template = "{{ bos_token }}" + CHAT_TEMPLATE
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        pad_token="<pad>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                                        chat_template=template)
    folder = tmp_path / "m"
    _tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "m.gguf"
    assert main(["export", str(folder), "--out", str(out)]) == 0
    fields = _fields(out)
    assert fields["tokenizer.ggml.add_bos_token"] is True and fields["tokenizer.ggml.bos_token_id"] == bos
    modelfile = (tmp_path / "Modelfile").read_text()
    user = re.search(r"{{ else }}(.*?){{ end }}", modelfile, re.S).group(1)
    assert user.startswith("<|im_start|>user\n")  # the template's own BOS left to llama.cpp
    rendered = tokenizer(user.replace("{{ .Prompt }}", "soup"), add_special_tokens=True)["input_ids"]
    assert rendered == CAUSAL.encode_sources(tokenizer, ["Create a recipe: soup"], 512)[0]
    assert rendered[0] == bos and rendered[1] != bos
    read, read_tokenizer = _read_back(out)
    assert read_tokenizer("soup")["input_ids"] == tokenizer("soup")["input_ids"] == [bos, *tokenizer(
        "soup", add_special_tokens=False)["input_ids"]]
