"""edgediff.tools: the user-facing layer (CLI, benchmarks, plots). Imports every other part."""
