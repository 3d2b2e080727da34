"""Checkpoints and resume: the checkpoint folder format (folder), the random generators' states it
keeps (rng), a run's checkpoints and final folder (persistence) with its README (model_card), what a
resume must not change (fingerprint), one writer per run folder (runlock) and the checks before a
run starts or resumes (run_guards)."""
