"""Coverage-guided fuzzing of the decoders a stranger reaches: `python -m hearthmesh.tools.fuzz`."""
