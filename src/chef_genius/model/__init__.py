"""The model and its placement: loading a base model and tokenizer, LoRA (loading), the hub asked
first (hub), the speed levers on Transformers models (speed, fast_t5, graphs), processes and
collectives (ranks), FSDP (sharding) and where the model runs (placement)."""
