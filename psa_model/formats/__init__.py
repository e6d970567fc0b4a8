"""PSA file formats: adapter files (native and reference layouts) and the converter CLI."""
