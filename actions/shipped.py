"""The actions the product ships, one module each. The registry type is in
``actions.registry``; this list is the only module that imports every action."""

from __future__ import annotations

from actions import (
    echo,
    echo_async,
    estimate_cost,
    generate_image,
    generate_video,
    health,
    list_posts,
    product_listing,
    project_run,
    story_image,
    story_video,
    upload,
)
from actions.registry import Registry
from actions.workflow import nodes

ACTIONS = (echo.ACTION, echo_async.ACTION, estimate_cost.ACTION, generate_image.ACTION,
           generate_video.ACTION, health.ACTION, list_posts.ACTION, product_listing.ACTION,
           project_run.ACTION, story_image.ACTION, story_video.ACTION, upload.ACTION)


def default_registry() -> Registry:
    """A registry holding every shipped action and the workflow node catalogue (a test
    may build one of its own)."""
    registry = Registry()
    for action in ACTIONS:
        registry.register(action)
    registry.nodes = nodes.default_catalogue()
    return registry
