"""Reason texts: the factors that moved a lead's score most, in plain words, at most 255 characters.

Building a string per lead in Python would dominate scoring time, yet a chunk holds few distinct
reasons. So each lead's reason is first reduced to integer tokens (its prefix, and each of its
top factors as factor, detail and points), the tokens are factorized into one key per distinct
reason, and one string is built per key. The result is a Categorical: one copy of each text and a
small code per lead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.factors import Factor

MAX_REASON_LENGTH = 255
SEPARATOR = "; "
NO_SIGNALS = "no scoring signals"
RED_FLAG_BONUS = 101  # above any |points|, so fired negative signals are always named first
MAX_WEIGHT = 100 + RED_FLAG_BONUS
POINT_OFFSET = 128  # points are -100..100; stored offset into 28..228
POINT_SPAN = 256


def factor_phrase(factor: Factor, detail: int, points: int) -> str:
    return f"{factor.texts[detail]} ({points:+d})"


def build_reasons(
    factors: list[Factor], prefix: np.ndarray, prefix_texts: tuple[str, ...], max_factors: int
) -> pd.Categorical:
    """One reason per lead: `prefix_texts[prefix]` (empty text for none), then its top factors.

    Negative signals that fired come first, then the other factors; within each, the largest
    absolute points first, ties broken by factor order. Zero-point factors are never named.
    """
    detail_span = max(len(factor.texts) for factor in factors)
    token_span = len(factors) * detail_span * POINT_SPAN
    by_factor = np.empty((len(factors), len(prefix)), dtype=np.int32)
    for index, factor in enumerate(factors):
        detail = factor.detail.astype(np.int32)
        token = (index * detail_span + detail) * POINT_SPAN + factor.points + POINT_OFFSET
        by_factor[index] = np.where(factor.points != 0, token, -1)
    rows = np.arange(len(prefix))
    tokens = [by_factor[slot, rows] for slot in top_factor_slots(factors, max_factors)]

    key = prefix.astype(np.int64)
    for token in tokens:
        dense, _ = pd.factorize(key)
        key = dense.astype(np.int64) * (token_span + 1) + token + 1
    codes, uniques = pd.factorize(key)

    first_row = np.empty(len(uniques), dtype=np.int64)
    first_row[codes[::-1]] = np.arange(len(codes))[::-1]
    phrases = [_phrases(factors, token[first_row], detail_span) for token in tokens]
    texts = [
        join_reason([prefix_texts[p]] if prefix_texts[p] else [], [t for t in row if t])
        for p, *row in zip(prefix[first_row], *phrases, strict=True)
    ]
    return _categorical(codes, texts)


def combine_prefixes(
    first: np.ndarray, first_texts: tuple[str, ...], second: pd.Series
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Prefix codes and texts for `first_texts[first]` followed by `second` (a text per lead,
    missing for none): one text per distinct pair in the chunk, not one per lead."""
    second_codes, second_texts = pd.factorize(second)
    pair = first.astype(np.int64) * (len(second_texts) + 1) + second_codes + 1
    codes, pairs = pd.factorize(pair)
    firsts, seconds = np.divmod(pairs, len(second_texts) + 1)
    seconds_texts = ("",) + tuple(second_texts)
    texts = tuple(
        SEPARATOR.join(text for text in (first_texts[f], seconds_texts[s]) if text)
        for f, s in zip(firsts.tolist(), seconds.tolist(), strict=True)
    )
    return codes, texts


def top_factor_slots(factors: list[Factor], max_factors: int) -> list[np.ndarray]:
    """Per slot, the factor index of each lead's next most important factor (see build_reasons).

    Each factor gets an order key, unique within a lead; a slot is the smallest key greater than
    the previous slot's. Column-wise minimums over the few factors beat sorting every row.
    """
    count = len(factors)
    keys = []
    for index, factor in enumerate(factors):
        weight = np.abs(factor.points)
        if factor.group == "negative":
            weight = np.where(factor.points != 0, weight + RED_FLAG_BONUS, 0)
        keys.append(((MAX_WEIGHT + 1 - weight) * count + index).astype(np.int16))
    previous = np.full(len(keys[0]), -1, dtype=np.int16)
    slots = []
    for _ in range(min(max_factors, count)):
        unused = np.iinfo(np.int16).max
        best = np.full_like(previous, unused)
        for key in keys:
            np.minimum(best, np.where(key > previous, key, unused), out=best)
        slots.append(best % count)
        previous = best
    return slots


def _phrases(factors: list[Factor], tokens: np.ndarray, detail_span: int) -> list[str]:
    distinct = {int(token) for token in np.unique(tokens)}
    text = {-1: ""}
    for token in distinct - {-1}:
        rest, points = divmod(token, POINT_SPAN)
        index, detail = divmod(rest, detail_span)
        text[token] = factor_phrase(factors[index], detail, points - POINT_OFFSET)
    return [text[token] for token in tokens.tolist()]


def join_reason(prefix: list[str], phrases: list[str]) -> str:
    """Join phrases, dropping the least important ones until the text fits the CRM field."""
    phrases = phrases or [NO_SIGNALS]
    while True:
        text = SEPARATOR.join(prefix + phrases)
        if len(text) <= MAX_REASON_LENGTH or len(phrases) == 1:
            return text[:MAX_REASON_LENGTH]
        phrases = phrases[:-1]


def _categorical(codes: np.ndarray, texts: list[str]) -> pd.Categorical:
    """Categorical from codes into `texts`, merging texts that came out equal."""
    categories, remap = np.unique(np.array(texts, dtype=object), return_inverse=True)
    return pd.Categorical.from_codes(remap[codes], categories=pd.Index(categories, dtype="str"))
