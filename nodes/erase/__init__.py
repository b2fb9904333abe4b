"""Erase nodes: Erase Concept (trains an erased text encoder in the graph) and Swap Text Encoder."""
