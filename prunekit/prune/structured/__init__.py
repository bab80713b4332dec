"""Structured pruning: remove whole neurons, filters, channels and heads, and rebuild smaller.

graph.py finds the coupled groups (traced with trace.py, coupled by rules.py over atoms.py);
scores.py ranks units; plan.py picks them; shrink.py rebuilds the model; api.py runs it all
with verification and rollback. DESIGN.md explains the choices.
"""

from prunekit.prune.structured.api import prune_structured_
from prunekit.prune.structured.graph import DependencyGraph, Group, analyze
from prunekit.prune.structured.report import StructuredReport

__all__ = ["DependencyGraph", "Group", "StructuredReport", "analyze", "prune_structured_"]
