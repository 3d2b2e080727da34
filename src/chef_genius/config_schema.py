"""The configuration schema: dataclasses for everything training needs.

Each field is typed and carries its help text. `chef_genius.config` resolves a `TrainConfig` from
them, a preset, a YAML file and flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from chef_genius.errors import UserError

# Decoding presets (their settings: chef_genius.inference.DECODING).
DecodingName = Literal["greedy", "beam", "sample", "guarded", "careful", "chef"]
DECODING_NAMES: tuple[str, ...] = get_args(DecodingName)

SEED_TEMPLATES = [
    "Create a recipe: {text}",
    "Generate a detailed recipe: {text}",
    "Make a dish with: {text}",
    "Recipe for: {text}",
    "How to prepare: {text}",
    "Cooking instructions: {text}",
    "{text}",
]


def doc(help_text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text (shown by ``--help``, ``--print-config`` and the README's
    configuration table: `chef_genius.config_help`)."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


def _positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if value is not None and value <= 0:
            raise UserError(f"{section}.{name} must be positive, got {value}")


def _unit_interval(section: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{section}.{name} must be in [0, 1], got {value}")


@dataclass
class ModelConfig:
    name: str = doc("Hub id, local folder, GGUF file (dequantized once into a cached model folder) or trained "
                    "run (its final weights; a LoRA adapter is merged in once, into a cached folder) of the base "
                    "model; 'tiny' builds a small T5 offline.", "tiny")
    architecture: Literal["auto", "seq2seq", "causal"] = doc(
        "seq2seq (T5, BART) or causal (GPT-2, Llama); 'auto' reads it from the model config.", "auto")
    max_source_tokens: int = doc("Longest prompt, in tokens; longer prompts are cut.", 128)
    chat_template: bool = doc("Causal models whose tokenizer has a chat template: the prompt is a user turn and "
                              "the recipe the assistant's reply (loss on the reply only), as the model was "
                              "instruction-tuned; false uses plain 'prompt newline recipe' text.", True)
    max_target_tokens: int = doc("Longest recipe target, in tokens; longer targets are cut.", 512)
    dtype: Literal["auto", "bf16", "fp32"] = doc("Compute dtype: 'auto' is bf16 on GPU, fp32 on CPU.", "auto")
    gradient_checkpointing: bool = doc("Recompute activations to save memory (slower).", False)
    compile_blocks: bool = doc("Compile the training forward's layers with torch.compile (with fast_forward: one "
                               "graph per kind of T5 layer, shared by every layer; otherwise each repeated "
                               "block). GPU only, ignored on CPU; the first steps take about a minute longer.",
                               True)
    cuda_graphs: bool = doc("Capture each batch shape's forward and backward in a CUDA graph and replay it "
                            "(one GPU process; batch shapes are rounded up to multiples of 32 source / 64 "
                            "target tokens so that few graphs are needed). Removes the per-kernel launch cost "
                            "that bounds small batches; stays off under a token budget (--max-tokens), whose "
                            "large batches hide that cost and whose many shapes would each hold a graph.", True)
    fsdp: bool = doc("Shard parameters, gradients and optimizer state across processes with FSDP (torch's "
                     "fully_shard, one unit per transformer block): full fine-tuning of models too large for "
                     "one GPU under torchrun / accelerate launch. Needs --disable-lora.", False)
    fast_forward: bool = doc("Train T5-family models through chef-genius' lean forward (one plain function per "
                             "layer, position bias and mask built once per stack; same values as Transformers'). "
                             "With compile_blocks, each kind of layer is compiled once and shared by all layers.",
                             True)
    fused_norm: bool = doc("Compute T5's RMS norm with torch's fused rms_norm (same values, fewer kernels).", True)
    shared_bias_attention: bool = doc("T5 attention through SDPA with the position bias and mask combined once "
                                      "per forward instead of once per layer (same values).", True)

    def __post_init__(self) -> None:
        _positive("model", max_source_tokens=self.max_source_tokens, max_target_tokens=self.max_target_tokens)


@dataclass
class LoraSettings:
    enabled: bool = doc("Train LoRA adapters through PEFT; false fine-tunes every weight.", True)
    r: int = doc("LoRA rank.", 16)
    alpha: int = doc("LoRA alpha (scale = alpha / r).", 32)
    dropout: float = doc("Dropout on the LoRA branch.", 0.1)
    fp32_inputs: bool = doc("Let PEFT copy each LoRA input to fp32 (its default); false keeps bf16 inputs "
                            "in bf16 training (the adapter weights stay fp32 either way).", False)
    target_modules: list[str] = doc(
        "Modules to adapt; empty picks per architecture (T5: q, v). ['all-linear'] adapts all.", factory=list)

    def __post_init__(self) -> None:
        _positive("lora", r=self.r, alpha=self.alpha)
        _unit_interval("lora", dropout=self.dropout)


@dataclass
class CurriculumStage:
    until: float = doc("This stage lasts while training progress (epoch/epochs, or step/steps when the epochs "
                       "are too few for the stages) is below this.", 1.0)
    level: Literal["easy", "medium", "all"] = doc("Recipes admitted: easy, medium (and easy), all.", "all")


@dataclass
class DataConfig:
    path: str | None = doc("Prepared dataset folder (from `prepare`); empty uses the bundled sample.", None)
    num_workers: int = doc("DataLoader worker processes for collation.", 2)
    curriculum: bool = doc("Order training from easy to hard recipes: by epoch, or by optimizer step inside the "
                           "epochs when they are too few for the stages. Off by default: in the ablation study "
                           "(docs/ablation.md) it raised held-out loss slightly.", False)
    curriculum_stages: list[CurriculumStage] = doc(
        "Curriculum stages by training progress.",
        factory=lambda: [CurriculumStage(0.3, "easy"), CurriculumStage(0.6, "medium"), CurriculumStage(1.0, "all")])
    progressive_quality: bool = doc("Raise the quality threshold linearly over the epochs (over the stages when "
                                    "they advance by step).", True)
    threshold_by_step: bool = doc("With the curriculum off: raise the progressive threshold over the stages by "
                                  "optimizer step when, by epoch, it would never reach quality_end (one epoch, or "
                                  "--max-steps before the last epoch). A run checkpointed before this setting "
                                  "existed resumes with it off (its threshold rose by epoch).", True)
    quality_start: float = doc("Quality threshold of the first epoch.", 0.50)
    quality_end: float = doc("Quality threshold of the last epoch.", 0.75)
    augmentation_prob: float = doc("Probability that a training example is augmented (0.3 in the design "
                                   "document). 0 by "
                                   "default: no measurable effect in the ablation study, and at full scale it "
                                   "re-tokenizes that share of the targets every epoch.", 0.0)
    mixed_templates: bool = doc("Draw one of the instruction templates per training example.", True)
    templates: list[str] = doc("Instruction templates; the first is used for validation.",
                               factory=lambda: list(SEED_TEMPLATES))
    reference: bool = doc("Write the training recipe nearest to each request (title and food words) into its "
                          "prompt, after the request, in training and in everything that prompts the run "
                          "(`chef_genius.retrieval`); needs model.max_source_tokens >= 256.", False)

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise UserError(f"data.num_workers must be >= 0, got {self.num_workers}")
        _unit_interval("data", quality_start=self.quality_start, quality_end=self.quality_end,
                       augmentation_prob=self.augmentation_prob)
        if not self.templates or any("{text}" not in t for t in self.templates):
            raise UserError("data.templates must be non-empty and each must contain {text}")
        bounds = [stage.until for stage in self.curriculum_stages]
        if not bounds or bounds != sorted(bounds) or bounds[-1] < 1.0:
            raise UserError("data.curriculum_stages must be in increasing 'until' order, the last >= 1.0")
        if self.curriculum_stages[-1].level != "all" or any(until >= 1.0 for until in bounds[:-1]):
            raise UserError("data.curriculum_stages must end with an 'all' stage that starts before 1.0, so that "
                            "every recipe is trained on")


@dataclass
class OptimConfig:
    epochs: int = doc("Passes over the (selected) training data.", 5)
    batch_size: int = doc("Examples per micro-batch (ignored when max_tokens is set).", 12)
    max_tokens: int | None = doc("Token budget per micro-batch (source + target, padded); overrides "
                                 "batch_size.", None)
    gradient_accumulation_steps: int = doc("Micro-batches per optimizer step.", 4)
    learning_rate: float | None = doc("Peak learning rate; empty: 1e-3 with LoRA, 2e-4 for full fine-tuning (the "
                                      "ablation study's tuned rates); with preference pairs 5e-5 and 1e-6.", None)
    weight_decay: float = doc("AdamW weight decay.", 0.01)
    max_grad_norm: float = doc("Gradient clipping norm; 0 disables clipping.", 1.0)
    label_smoothing: float = doc("Label smoothing epsilon of the training loss (0.1 in the design document). "
                                 "0 by default: in "
                                 "the ablation study 0.1 raised held-out loss by 0.20.", 0.0)
    max_steps: int | None = doc("Stop after this many optimizer steps (the schedule is built for them); empty "
                                "trains every epoch. A fixed budget for comparisons and short runs.", None)

    def __post_init__(self) -> None:
        _positive("optim", epochs=self.epochs, batch_size=self.batch_size, max_tokens=self.max_tokens,
                  gradient_accumulation_steps=self.gradient_accumulation_steps, learning_rate=self.learning_rate,
                  max_steps=self.max_steps)
        if self.label_smoothing < 0 or self.label_smoothing >= 1:
            raise UserError(f"optim.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise UserError("optim.weight_decay and optim.max_grad_norm must be >= 0")


@dataclass
class ScheduleConfig:
    cosine: bool = doc("Warmup then cosine annealing with warm restarts; false: linear warmup and decay.",
                       True)
    warmup_steps: int = doc("Warmup optimizer steps (capped at warmup_max_fraction of all steps).", 1000)
    warmup_max_fraction: float = doc("Largest share of training spent warming up.", 0.1)
    first_cycle_steps: int = doc("T_0: optimizer steps of the first cosine cycle.", 1000)
    cycle_mult: int = doc("T_mult: each cycle is this many times longer than the last.", 2)
    min_learning_rate: float = doc("eta_min: learning rate at the bottom of each cycle.", 1e-6)

    def __post_init__(self) -> None:
        _positive("schedule", first_cycle_steps=self.first_cycle_steps, cycle_mult=self.cycle_mult)
        if self.warmup_steps < 0 or self.min_learning_rate < 0:
            raise UserError("schedule.warmup_steps and schedule.min_learning_rate must be >= 0")
        _unit_interval("schedule", warmup_max_fraction=self.warmup_max_fraction)


@dataclass
class GradientNoiseConfig:
    enabled: bool = doc("Add annealed Gaussian noise to gradients (Neelakantan et al. 2015). Off by default: in "
                        "the ablation study it raised held-out loss slightly.", False)
    eta: float = doc("Noise variance per element: sigma^2 = eta / (1 + step)^gamma. Chosen by measurement "
                     "(docs/training.md, 'Choosing the noise scale') so the noise norm starts near 10 % of "
                     "the gradient norm; the design document's 0.3 made it about 1,000 times the gradient.", 2e-9)
    gamma: float = doc("Annealing exponent.", 0.55)

    def __post_init__(self) -> None:
        _positive("gradient_noise", eta=self.eta, gamma=self.gamma)


@dataclass
class EvalConfig:
    eval_steps: int = doc("Validate every this many optimizer steps (and at each epoch end).", 1000)
    max_eval_batches: int | None = doc("Validation batches per evaluation; empty means all.", 100)
    patience: int = doc("Evaluations without improvement before early stopping; 0 disables.", 3)
    min_delta: float = doc("Smallest val_loss decrease that counts as an improvement.", 0.0)
    keep_best: bool = doc("final/ holds the weights of the best validation loss; false: the last weights "
                          "(validation is still measured and logged). With patience 0, validation then changes "
                          "nothing in training: improvement 1 off, as the ablation study runs it.", True)
    sample_prompts: list[str] = doc("Fixed prompts generated at each validation.", factory=lambda: [
        "Create a simple pasta dish", "Make a healthy breakfast", "something with chicken, rice and lemon"])
    generate_samples: bool = doc("Generate and score sample recipes at each evaluation.", True)
    num_validation_samples: int = doc("Validation prompts generated at each evaluation, besides the fixed ones.",
                                      2)
    decoding: DecodingName = doc(
        "Decoding of sample recipes (presets in chef_genius.inference.DECODING; docs/quality.md says how the "
        "default was chosen).", "careful")
    max_new_tokens: int = doc("Longest generated recipe, in tokens (512 covers the 95th-percentile recipe of "
                              "the openrecipes corpus, 452 SmolLM2 tokens).", 512)
    best_of: int = doc("Sample this many recipes per prompt and keep the one the cookable verdict ranks best "
                       "(chef_genius.best_of); 1 keeps the first. Costs N times the generation.", 1)
    grounded: float = doc("Grounded decoding: while the steps are written, lower the logits of foods the recipe's "
                          "own ingredient list lacks by this much (chef_genius.grounding); 0 is off.", 0.0)
    engine: Literal["transformers", "chef-genius"] = doc(
        "Who writes sample and evaluation recipes: transformers (its generate) or chef-genius (chef_genius.generation: "
        "a cache allocated once, length-sorted continuous batches, CUDA graphs; greedy and guarded give the same "
        "recipes, sampled presets the same distribution; docs/generation.md).", "chef-genius")

    def __post_init__(self) -> None:
        _positive("eval", eval_steps=self.eval_steps, max_eval_batches=self.max_eval_batches,
                  max_new_tokens=self.max_new_tokens, best_of=self.best_of)
        if self.grounded < 0:
            raise UserError("eval.grounded must be >= 0")
        if self.patience < 0 or self.min_delta < 0:
            raise UserError("eval.patience and eval.min_delta must be >= 0")


@dataclass
class LoggingConfig:
    report_to: list[Literal["console", "jsonl", "wandb", "tensorboard"]] = doc(
        "Metric sinks; metrics.jsonl is always written.", factory=lambda: ["console", "jsonl"])
    log_every: int = doc("Log training metrics every this many optimizer steps.", 10)
    wandb_project: str = doc("W&B project (the API key comes only from the environment).", "chef-genius")
    run_name: str | None = doc("Run name; empty derives one from the time.", None)

    def __post_init__(self) -> None:
        _positive("logging", log_every=self.log_every)


@dataclass
class CheckpointConfig:
    save_steps: int = doc("Write a checkpoint every this many optimizer steps (and at the end).", 1000)
    keep_last: int = doc("Checkpoints kept besides the best one.", 2)
    resume: str | None = doc("'auto' resumes the newest complete checkpoint in output_dir; or a checkpoint path.",
                             None)
    resume_changed: bool = doc("Resume even when settings that change the data order, the schedule or the model "
                               "differ from the checkpoint's (each difference is printed and logged in "
                               "RUN/resume_log.jsonl); without it such a resume is refused.", False)

    def __post_init__(self) -> None:
        _positive("checkpoint", save_steps=self.save_steps, keep_last=self.keep_last)


@dataclass
class PreferenceConfig:
    pairs: str | None = doc("Preference pairs, JSONL of prompt, chosen and rejected recipe texts (`chef-genius "
                            "preference-pairs` writes them): train with DPO on them instead of the recipes' "
                            "cross-entropy (docs/training.md, 'Preference tuning'); empty: ordinary fine-tuning.",
                            None)
    beta: float = doc("DPO beta: the scale of the policy's log-probability ratios to the starting model; larger "
                      "keeps the policy closer to it.", 0.1)
    sft_weight: float = doc("Weight of the chosen recipe's token-mean cross-entropy added to each pair's DPO "
                            "loss; 0: DPO alone.", 0.0)

    def __post_init__(self) -> None:
        _positive("preference", beta=self.beta)
        if self.sft_weight < 0:
            raise UserError(f"preference.sft_weight must be >= 0, got {self.sft_weight}")


@dataclass
class TrainConfig:
    output_dir: str | None = doc("Run folder: config, metrics, checkpoints, adapter. Empty: runs/run-<time>, "
                                 "or with --resume auto the newest runs/run-* folder.", None)
    seed: int = doc("Seed of every random choice (data order, templates, augmentation, noise).", 42)
    preset: Literal["rtx5090", "rtx4090", "rtx3090", "h100"] | None = doc(
        "Hardware preset (batch size, accumulation, LoRA rank) from the design document's best "
        "practices table; file and flags override it.", None)
    model: ModelConfig = doc("Base model.", factory=ModelConfig)
    lora: LoraSettings = doc("LoRA adapters.", factory=LoraSettings)
    data: DataConfig = doc("Data, curriculum, quality threshold, augmentation and templates.", factory=DataConfig)
    optim: OptimConfig = doc("Optimizer, batching and label smoothing.", factory=OptimConfig)
    schedule: ScheduleConfig = doc("Learning-rate schedule.", factory=ScheduleConfig)
    gradient_noise: GradientNoiseConfig = doc("Gradient noise.", factory=GradientNoiseConfig)
    eval: EvalConfig = doc("Validation, early stopping and sample recipes.", factory=EvalConfig)
    logging: LoggingConfig = doc("Metric sinks.", factory=LoggingConfig)
    checkpoint: CheckpointConfig = doc("Checkpoints and resume.", factory=CheckpointConfig)
    preference: PreferenceConfig = doc("Preference tuning (DPO).", factory=PreferenceConfig)

    def __post_init__(self) -> None:
        if self.data.reference and self.model.max_source_tokens < MIN_REFERENCE_SOURCE_TOKENS:
            raise UserError(f"data.reference puts a recipe in every prompt: set model.max_source_tokens to at least "
                            f"{MIN_REFERENCE_SOURCE_TOKENS} (384 holds most), got {self.model.max_source_tokens}")
        if self.optim.learning_rate is None and self.preference.pairs is not None:  # common DPO rates, unmeasured here
            self.optim.learning_rate = DPO_LORA_LEARNING_RATE if self.lora.enabled else DPO_FULL_LEARNING_RATE
        if self.optim.learning_rate is None:  # the rate the ablation study found for each kind of training
            self.optim.learning_rate = LORA_LEARNING_RATE if self.lora.enabled else FULL_LEARNING_RATE


LORA_LEARNING_RATE, FULL_LEARNING_RATE = 1e-3, 2e-4
MIN_REFERENCE_SOURCE_TOKENS = 256
DPO_LORA_LEARNING_RATE, DPO_FULL_LEARNING_RATE = 5e-5, 1e-6
