"""ComfyUI adapters for Unlearn (SLUG): nodes, the node's run, image towers, patches on a CLIP clone."""
