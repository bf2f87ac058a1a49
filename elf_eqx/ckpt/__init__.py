"""Building blocks of :mod:`elf_eqx.checkpoint`: how a state pytree is laid out on disk
(:mod:`~elf_eqx.ckpt.tree`) and what identifies the model a directory belongs to
(:mod:`~elf_eqx.ckpt.signature`)."""
