"""Built-in baselines: completions made without RealFill, evaluated in the same harness."""
