"""`chef-genius train`: the run as one value (run: `build_run`, from the parts that parts makes),
the loop and one optimizer step (trainer), validation, early stopping, samples and checkpoints
(evaluating, validation), each epoch's batches and steps (run_plan) and Ctrl-C (interrupt)."""
