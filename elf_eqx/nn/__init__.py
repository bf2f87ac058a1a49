"""Small building blocks shared by the ELF network and the frozen encoders."""

from elf_eqx.nn.linear import Linear, xavier_uniform
from elf_eqx.nn.norm import LayerNorm, RMSNorm

__all__ = ["LayerNorm", "Linear", "RMSNorm", "xavier_uniform"]
