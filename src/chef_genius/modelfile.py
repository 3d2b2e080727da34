"""The Ollama Modelfile written beside an exported GGUF file.

Its TEMPLATE is the run's prompt in Go-template form: the chat template (or, for a run trained
without one, the plain prompt and newline) rendered around the run's first training template, with
``{{ .Prompt }}`` where the request goes, so `ollama run MODEL "tomato soup"` gives the model the
tokens `chef-genius generate RUN "tomato soup"` gives it. Its PARAMETER lines are the default
decoding of `generate` (`EvalConfig.decoding`, a preset of `chef_genius.inference.DECODING`) and
the stop tokens (end of turn, EOS).
"""

from __future__ import annotations

import json

from chef_genius import __version__
from chef_genius.errors import UserError

MODELFILE_NAME = "Modelfile"
MODELFILE_MARK = "# Ollama Modelfile written by chef-genius export"
_PROMPT = "\u2063CHEFGENIUSPROMPT\u2063"
_SYSTEM = "\u2063CHEFGENIUSSYSTEM\u2063"


def go_literal(text: str) -> str:
    """``text`` as literal Go-template text (a ``{{`` would open an action)."""
    return text.replace("{{", '{{ "{{" }}')


def _render(tokenizer, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception:  # noqa: BLE001 - a template may refuse a role (raise_exception): no such form then
        return None


def prompt_template(tokenizer, templates: list[str]) -> str:
    """The Go-template TEMPLATE: the prompt as `chef_genius.families.Causal.encode_sources` builds it."""
    from chef_genius.encoding import has_chat_template

    request = templates[0].format(text=_PROMPT)
    if not has_chat_template(tokenizer):
        return go_literal(request + "\n").replace(_PROMPT, "{{ .Prompt }}")
    plain = _render(tokenizer, [{"role": "user", "content": request}])
    if plain is None or _PROMPT not in plain:
        raise UserError("the chat template does not render a user turn; cannot write the Modelfile's TEMPLATE")
    bos = tokenizer.bos_token
    from chef_genius.gguf_file import adds_special

    if bos and adds_special(tokenizer)[0] and plain.startswith(bos):
        plain = plain[len(bos):]  # llama.cpp adds BOS itself (add_bos_token): not twice
    user = go_literal(plain).replace(_PROMPT, "{{ .Prompt }}")
    system = _render(tokenizer, [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": request}])
    if system is None or _SYSTEM not in system or _PROMPT not in system:
        return user
    if bos and adds_special(tokenizer)[0] and system.startswith(bos):
        system = system[len(bos):]
    with_system = go_literal(system).replace(_PROMPT, "{{ .Prompt }}").replace(_SYSTEM, "{{ .System }}")
    return f"{{{{ if .System }}}}{with_system}{{{{ else }}}}{user}{{{{ end }}}}"


def decoding_parameters() -> tuple[list[tuple[str, object]], list[str]]:
    """(Ollama PARAMETER lines as (name, value), notes on what Ollama cannot do) for the default
    decoding of `generate`."""
    from chef_genius.config_schema import EvalConfig
    from chef_genius.inference import DECODING, NEUTRAL

    name = EvalConfig.decoding
    settings = {**NEUTRAL, **DECODING[name]}
    notes = []
    if settings["do_sample"]:
        parameters = [("temperature", settings["temperature"]), ("top_p", settings["top_p"]),
                      ("top_k", settings["top_k"])]
    else:
        parameters = [("temperature", 0)]
        if settings["num_beams"] > 1:
            notes.append(f"its beam search ({settings['num_beams']} beams) has no Ollama equivalent: greedy here")
    parameters += [("repeat_penalty", settings["repetition_penalty"]), ("num_predict", EvalConfig.max_new_tokens)]
    if settings["no_repeat_ngram_size"]:
        notes.append(f"its ban on repeating any {settings['no_repeat_ngram_size']}-token run has no Ollama equivalent")
    return parameters, [f"`{name}`: " + "; ".join(notes)] if notes else [f"`{name}`"]


def _number(value) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def modelfile_text(gguf_name: str, tokenizer, templates: list[str]) -> str:
    """The Modelfile for ``./gguf_name`` (beside it)."""
    from chef_genius.families import CAUSAL  # GGUF export writes causal models only

    template = prompt_template(tokenizer, templates)
    if '"""' in template:
        raise UserError("the prompt template holds '\"\"\"', which a Modelfile TEMPLATE cannot quote")
    parameters, notes = decoding_parameters()
    stops = [tokenizer.convert_ids_to_tokens(i) for i in CAUSAL.stop_ids(tokenizer)]
    lines = [f"{MODELFILE_MARK} {__version__}: ollama create NAME -f Modelfile",
             f"FROM ./{gguf_name}",
             "# The prompt as `chef-genius generate` builds it (chat template around the run's first prompt template).",
             f'TEMPLATE """{template}"""',
             f"# The default decoding of `chef-genius generate`, {notes[0]}."]
    lines += [f"PARAMETER {key} {_number(value)}" for key, value in parameters]
    lines += [f"PARAMETER stop {json.dumps(token, ensure_ascii=False)}" for token in stops]
    return "\n".join(lines) + "\n"
