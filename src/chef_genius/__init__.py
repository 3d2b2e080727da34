"""chef-genius: fine-tune language models to write cooking recipes."""

__version__ = "0.1.0"
