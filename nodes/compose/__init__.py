"""ComfyUI adapters for Compose (CDM): shard-set nodes, gate nodes, the composed model, clone deltas."""
