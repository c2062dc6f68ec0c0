"""Experiment trackers: where a run's scalars, validation images and metrics go besides the run folder."""
