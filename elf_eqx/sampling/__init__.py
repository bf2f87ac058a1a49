"""Sampling text: settings, the compiled sampler, conditions, loaded-model sessions, sample records."""
