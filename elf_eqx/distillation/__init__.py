"""Few-step students by progressive distillation of a trained ELF (docs/method.md#distillation):
the loss (:mod:`~elf_eqx.distillation.objective`), the settings (:mod:`~elf_eqx.distillation.config`),
the rounds as training runs (:mod:`~elf_eqx.distillation.rounds`) and their manifest
(:mod:`~elf_eqx.distillation.manifest`)."""
