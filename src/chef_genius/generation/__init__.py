"""A decoding engine for the models chef-genius trains: a KV cache allocated once per batch,
prefill in one pass, decode steps on the device (CUDA graphs on a GPU), continuous batching.

Built on the models' own forward passes (Transformers); below `chef_genius.inference`, which
chooses it with ``engine="chef-genius"``. See docs/generation.md for how it is proven the same as
`transformers.generate`.
"""

from chef_genius.generation.engine import EngineOptions, generate_ids, unsupported

__all__ = ["EngineOptions", "generate_ids", "unsupported"]
