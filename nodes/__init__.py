"""ComfyUI adapters, grouped by capability; every node the pack registers is listed here.

Node files hold node classes only; their helpers sit beside them and are imported one way
(node module -> helper module, never back).
"""
from .compose.attribution_node import ShardAttributionNode
from .compose.gate_nodes import LoadShardGateNode, TrainShardGateNode
from .compose.shard_nodes import ComposeShardsNode, ForgetShardNode, RestrictShardsNode, ShardNode
from .display import ShowTextNode
from .erase.erase_nodes import EraseConceptNode
from .erase.swap_nodes import SwapTextEncoderNode
from .tinyworld import LoadTinyWorldNode, TinyWorldImagesNode
from .unlearn.slug_nodes import ApplySlugPatchNode, SlugUnlearnNode

# node id -> (class, name in the node menu)
NODES = {
    "UnlearnKitShard": (ShardNode, "Shard (UnlearnKit)"),
    "UnlearnKitComposeShards": (ComposeShardsNode, "Compose Shards (UnlearnKit)"),
    "UnlearnKitForgetShard": (ForgetShardNode, "Forget Shard (UnlearnKit)"),
    "UnlearnKitRestrictShards": (RestrictShardsNode, "Restrict Shards (UnlearnKit)"),
    "UnlearnKitShardAttribution": (ShardAttributionNode, "Shard Attribution (UnlearnKit)"),
    "UnlearnKitTrainShardGate": (TrainShardGateNode, "Train Shard Gate (UnlearnKit)"),
    "UnlearnKitLoadShardGate": (LoadShardGateNode, "Load Shard Gate (UnlearnKit)"),
    "UnlearnKitLoadTinyWorld": (LoadTinyWorldNode, "Load Tiny World (UnlearnKit)"),
    "UnlearnKitTinyWorldImages": (TinyWorldImagesNode, "Tiny World Images (UnlearnKit)"),
    "UnlearnKitSwapTextEncoder": (SwapTextEncoderNode, "Swap Text Encoder (UnlearnKit)"),
    "UnlearnKitEraseConcept": (EraseConceptNode, "Erase Concept (UnlearnKit)"),
    "UnlearnKitSlugUnlearn": (SlugUnlearnNode, "SLUG Unlearn (UnlearnKit)"),
    "UnlearnKitApplySlugPatch": (ApplySlugPatchNode, "Apply SLUG Patch (UnlearnKit)"),
    "UnlearnKitShowText": (ShowTextNode, "Show Text (UnlearnKit)"),
}
NODE_CLASS_MAPPINGS = {node_id: cls for node_id, (cls, _) in NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, (_, name) in NODES.items()}
