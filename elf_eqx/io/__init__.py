"""Reading weight files: Flax msgpack checkpoints, restricted pickles and safetensors."""
