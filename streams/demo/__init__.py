"""The demo: a seeded shopper simulation that feeds the input topics, and its live view."""

from streams.demo.traffic import (
    ACTIONS,
    CATEGORIES,
    DEFAULT_MIX,
    Product,
    ShopperSimulation,
    parse_mix,
)

__all__ = ["ACTIONS", "CATEGORIES", "DEFAULT_MIX", "Product", "ShopperSimulation", "parse_mix"]
