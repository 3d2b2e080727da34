"""Training data as the loop reads it: memory-mapped splits (table), targets tokenized once
(token_cache), each epoch's examples (epochs), length-grouped batches (batch_plan) and their
collation into tensors (collate)."""
