"""Making an offline Gen. PPL judge: BPE tokenizer, small GPT-2 training, export (used by train_judge.py)."""
