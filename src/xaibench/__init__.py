"""xaibench: train CNN classifiers several ways, explain them, and score the explanations."""
__version__ = "0.1.0"
