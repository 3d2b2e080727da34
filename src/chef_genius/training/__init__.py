"""`chef-genius train`: the loop (trainer), its set-up (setup), validation, early stopping and
samples (validation, evaluating), each epoch's batches and steps (run_plan) and Ctrl-C (interrupt)."""
