"""The shared scoring module: pure, vectorized functions over the canonical lead frame."""

from scoring.engine import OUTPUT_COLUMNS, Explanation, explain, score
from scoring.rules import DEFAULT_RULES_PATH, Rules, RulesError, load_rules

__all__ = [
    "DEFAULT_RULES_PATH",
    "OUTPUT_COLUMNS",
    "Explanation",
    "Rules",
    "RulesError",
    "explain",
    "load_rules",
    "score",
]
