"""gate: a continuous-evaluation regression gate for fine-tuned model releases."""

__version__ = "0.1.0"

__all__ = ["__version__"]
