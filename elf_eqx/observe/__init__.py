"""Seeing inside a run (README.md, "Seeing inside a run"): what a step measurably cost, where its
time went, a profiler trace on demand, the wandb/TensorBoard mirrors, and a one-screen summary of
a run folder. One job per module:

- :mod:`~elf_eqx.observe.chips`: the one table of accelerator peaks by ``device_kind`` (the dry run
  reads it too).
- :mod:`~elf_eqx.observe.step_clock`: the host's timing of each step, and the per-record figures
  (step time, tokens/s, MFU, data wait, host share) made from it without any extra device sync.
- :mod:`~elf_eqx.observe.device_memory`: device memory in use and at peak, where the backend says.
- :mod:`~elf_eqx.observe.profiler`: ``jax.profiler`` traces of chosen steps, or of a sampling call.
- :mod:`~elf_eqx.observe.run_info`: ``run_info.json``, what each start of a run was and ran on.
- :mod:`~elf_eqx.observe.tensorboard`, :mod:`~elf_eqx.observe.wandb_run`: the metric mirrors.
- :mod:`~elf_eqx.observe.run_folder`, :mod:`~elf_eqx.observe.summary`, :mod:`~elf_eqx.observe.plot`:
  reading a run folder (also while it is written), its summary and plots (``python -m elf_eqx.inspect``).
"""
