"""Load a trained run (base + adapter, or a merged / fully fine-tuned model) and generate recipes.

Used by validation samples, `generate`, `evaluate`, `merge` and `serve`; one generation path for all.
`runs` loads a run; `generating` holds the decoding presets and generates with a loaded model.
"""

from __future__ import annotations

from chef_genius.inference.generating import (
    DECODING,
    ENGINES,
    NEUTRAL,
    Generation,
    generate,
    generate_details,
)
from chef_genius.inference.runs import (
    WEIGHT_FILES,
    LoadedRun,
    load_run,
    model_folder,
    resolve_model_folder,
    trained_model_folder,
    training_model_name,
)

__all__ = ["DECODING", "ENGINES", "NEUTRAL", "WEIGHT_FILES", "Generation", "LoadedRun", "generate",
           "generate_details", "load_run", "model_folder", "resolve_model_folder", "trained_model_folder",
           "training_model_name"]
