"""Discrete baselines trained and scored in ELF's harness: masked diffusion (MDLM) and an
autoregressive model, both on ELF's transformer blocks (docs/method.md#baselines)."""
