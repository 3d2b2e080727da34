"""Checkpoints and resume: the checkpoint folder format (folder), a run's checkpoints and final
folder (persistence), what a resume must not change (fingerprint), one writer per run folder
(runlock) and the checks before a run starts or resumes (run_guards)."""
