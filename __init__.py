"""UnlearnKit — ComfyUI node pack entry.

ComfyUI imports this folder as a package and reads NODE_CLASS_MAPPINGS and
NODE_DISPLAY_NAME_MAPPINGS. The node modules import ComfyUI only inside functions, so
this file also imports cleanly without ComfyUI (tools, tests, the registry scanner).
"""
import logging

logger = logging.getLogger(__name__)

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as exc:  # a missing optional dependency must not break the host's start-up
    logger.error("UnlearnKit nodes not loaded: %s (run install.py in this folder)", exc)
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}

WEB_DIRECTORY = "./web"  # web/unlearnkit.js: Show Text draws its text on the node

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
