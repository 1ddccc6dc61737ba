"""The comparison scores behind a report's figures, for an auditor's own tools (bob.measure, pyeer).

For every row, :class:`RowScores` holds

- the utility pairs: every genuine pair and the impostor pairs (all of them up to ``limit``, else a
  seeded uniform sample of ``limit``, which the files say) of protected-vs-protected verification,
  scored as the utility figures score them;
- the judges' scores behind each privacy figure: for every attack and every judge, each victim's
  reconstruction against every gallery photo of that victim (what SAR counts) and against the
  best-scoring gallery photo of every other identity (what rank-1 compares with).

:func:`utility_csv`, :func:`four_column` and :func:`judge_csv` turn them into text;
:mod:`facepii.outputs` writes them under ``--out DIR/scores/`` (nothing here writes a file).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

import numpy as np

from facepii.metrics._comparators import ScoreFn, diagonal_scores
from facepii.metrics._pairs import genuine_pairs, pair_counts, paired_scores, sample_impostor_pairs

#: impostor pairs written per row by default (every genuine pair is always written)
DEFAULT_LIMIT = 100_000
ALL = -1  # write every impostor pair


@dataclass
class PairScores:
    """Scored pairs of items (positions into the evaluation's photo list)."""

    probe: np.ndarray        # (n,) int
    reference: np.ndarray    # (n,) int
    genuine: np.ndarray      # (n,) bool
    score: np.ndarray        # (n,) float32, as the figures used them
    genuine_total: int
    impostor_total: int
    sample_seed: int | None = None   # impostor pairs sampled with this seed; None: every one is listed
    how: str = ""                    # how the scores were computed (comparator, encrypted matching ...)

    @property
    def sampled(self) -> bool:
        return self.sample_seed is not None

    def header(self) -> list[str]:
        n_imp = int((~self.genuine).sum())
        lines = [f"genuine pairs: {int(self.genuine.sum())} (all {self.genuine_total})"]
        if self.sampled:
            lines.append(f"impostor pairs: {n_imp} of {self.impostor_total}, a seeded uniform sample (seed "
                         f"{self.sample_seed}); the report's figures use every pair, so figures recomputed from "
                         "this file estimate them (write every pair with --scores all)")
        else:
            lines.append(f"impostor pairs: {n_imp} (all {self.impostor_total}); figures recomputed from this "
                         "file equal the report's")
        if self.how:
            lines.append(f"scores: {self.how}; higher = more likely the same person")
        return lines


def all_impostor_pairs(labels: np.ndarray) -> np.ndarray:
    """Every unordered impostor pair (i < j, different identities), in row order."""
    lab = np.unique(np.asarray(labels), return_inverse=True)[1]
    out = []
    for i in range(len(lab) - 1):
        j = np.flatnonzero(lab[i + 1:] != lab[i]) + i + 1
        out.append(np.stack([np.full(len(j), i), j], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def utility_pairs(templates: np.ndarray, labels: np.ndarray, score_fn: ScoreFn, limit: int, seed: int,
                  paired_fn: ScoreFn | None = None, how: str = "") -> PairScores:
    """Every genuine pair and all impostor pairs (``limit`` = :data:`ALL` or at least their number) or a
    seeded sample of ``limit`` of them, each scored by ``paired_fn`` (row-wise) or ``score_fn``."""
    labels = np.asarray(labels)
    n_gen, n_imp = pair_counts(labels)
    gen = genuine_pairs(labels)
    sampled = limit != ALL and n_imp > limit
    imp = sample_impostor_pairs(labels, limit, seed) if sampled else all_impostor_pairs(labels)
    pairs = np.concatenate([gen, imp]).astype(np.int64)
    fn = paired_fn or (lambda a, b: diagonal_scores(score_fn, a, b))
    sc = paired_scores(fn, np.asarray(templates), pairs).astype(np.float32)
    return PairScores(pairs[:, 0], pairs[:, 1], np.r_[np.ones(len(gen), bool), np.zeros(len(imp), bool)], sc,
                      n_gen, n_imp, seed if sampled else None, how)


def listed_pairs(pairs: np.ndarray, n_genuine: int, scores: np.ndarray, genuine_total: int, impostor_total: int,
                 seed: int | None, how: str) -> PairScores:
    """Pairs scored elsewhere (encrypted matching): the first ``n_genuine`` are genuine."""
    pairs = np.asarray(pairs, np.int64)
    gen = np.zeros(len(pairs), bool)
    gen[:n_genuine] = True
    sampled = seed is not None and len(pairs) - n_genuine < impostor_total
    return PairScores(pairs[:, 0], pairs[:, 1], gen, np.asarray(scores, np.float32), genuine_total,
                      impostor_total, seed if sampled else None, how)


@dataclass
class JudgeScores:
    """One judge's scores of one attack's reconstructions against the victims' gallery."""

    attack: str
    judge: str
    matrix: np.ndarray          # (victims, gallery photos) scores, as the figures used them
    threshold: float            # the judge's threshold at FMR 1e-3 (SAR)


@dataclass
class RowScores:
    """What a row's score files hold."""

    utility: PairScores | None = None
    judges: list[JudgeScores] = field(default_factory=list)


@dataclass
class Items:
    """Names of the evaluation's items (photo paths relative to the dataset, or item numbers), their
    identities, and for the judge files the victims and the gallery."""

    names: list[str]
    labels: np.ndarray
    victims: np.ndarray | None = None          # victim labels, in the order of a judge matrix's rows
    sources: np.ndarray | None = None          # positions of the victims' source photos
    gallery: np.ndarray | None = None          # positions of the gallery photos (a judge matrix's columns)


def item_names(paths: list[str] | None, n: int, root=None) -> list[str]:
    """Photo paths relative to the dataset folder (so no file names the machine's layout), else item numbers."""
    from pathlib import Path

    if paths is None:
        return [f"item{i}" for i in range(n)]
    out = []
    base = None if root is None else Path(root)
    for p in paths:
        q = Path(p)
        try:
            out.append(q.resolve().relative_to(base).as_posix() if base is not None else q.name)
        except ValueError:
            out.append(q.name)
    return out


def _csv(header: list[str], columns: list[str], rows) -> str:
    buf = io.StringIO()
    for h in header:
        buf.write(f"# {h}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()


def _f(x) -> str:
    return f"{float(x):.9g}"  # 9 significant digits: a float32 read back is the same float32


UTILITY_COLUMNS = ["probe", "reference", "probe_identity", "reference_identity", "genuine", "score"]
JUDGE_COLUMNS = ["attack", "judge", "probe", "reference", "probe_identity", "reference_identity", "genuine",
                 "score", "threshold"]


def utility_csv(s: PairScores, items: Items, title: str) -> str:
    """probe, reference, probe_identity, reference_identity, genuine (0/1), score: one line per pair."""
    names, labels = items.names, items.labels
    rows = ((_name(names[a]), _name(names[b]), _name(labels[a]), _name(labels[b]), int(g), _f(v))
            for a, b, g, v in zip(s.probe.tolist(), s.reference.tolist(), s.genuine.tolist(), s.score.tolist()))
    return _csv([title, *s.header(), "comment lines start with #; pandas: read_csv(path, comment='#'); in a name, "
                 "%, # and control characters are written %25, %23, %0D ..."],
                UTILITY_COLUMNS, rows)


# also the bytes of a file name that is not UTF-8 (Python holds them as lone surrogates): %E9 for byte 0xE9
_UNSAFE = re.compile("[#\x00-\x1f\x7f\udc80-\udcff]")
_UNSAFE_TOKEN = re.compile("[\\s#\x00-\x1f\x7f\udc80-\udcff]")


def _pct(m: re.Match) -> str:
    c = ord(m.group())
    return f"%{c - 0xDC00 if 0xDC80 <= c <= 0xDCFF else c:02X}"


def _name(x) -> str:
    """A name (photo path, identity, judge) as a CSV field the readers recommended in the header read back whole:
    %, # (pandas' comment='#' cuts a line there) and control characters (a carriage return ends a line) are
    percent-encoded (%25, %23, %0D ...)."""
    return _UNSAFE.sub(_pct, str(x).replace("%", "%25"))


def _token(x) -> str:
    """A whitespace-free field of a four-column file: as :func:`_name`, and whitespace too (a space is %20)."""
    return _UNSAFE_TOKEN.sub(_pct, str(x).replace("%", "%25")) or "-"


def four_column(s: PairScores, items: Items, title: str) -> str:
    """bob.measure's four-column format: claimed identity (the reference's), real identity (the probe's),
    probe label, score; genuine exactly when the first two are equal. Lines starting with # are skipped
    by bob.measure.load.four_column."""
    names, labels = items.names, items.labels
    buf = io.StringIO()
    for h in [title, *s.header(), "columns: claimed_id real_id test_label score (bob.measure four-column); "
              "whitespace, %, # and control characters in a name are written %20, %25, %23, %0D ..."]:
        buf.write(f"# {h}\n")
    for a, b, v in zip(s.probe.tolist(), s.reference.tolist(), s.score.tolist()):
        buf.write(f"{_token(labels[b])} {_token(labels[a])} {_token(names[a])} {_f(v)}\n")
    return buf.getvalue()


def judge_csv(js: list[JudgeScores], items: Items, title: str) -> str:
    """Per attack and judge, per victim: the reconstruction (probe ``reconstruction:<source photo>``)
    against every gallery photo of the victim (genuine 1: SAR counts those at or above the threshold)
    and against the best-scoring gallery photo of every other identity (genuine 0: the victim is ranked
    first when its best genuine score is above all of them)."""
    names, labels = items.names, items.labels
    gal = np.asarray(items.gallery)
    gal_lab = np.asarray(labels)[gal]
    idents = np.unique(gal_lab)
    rows = []
    for j in js:
        M = np.asarray(j.matrix, np.float32)
        for v, victim in enumerate(np.asarray(items.victims)):
            probe = _name(f"reconstruction:{names[int(items.sources[v])]}")
            for c in np.flatnonzero(gal_lab == victim):
                rows.append((_name(j.attack), _name(j.judge), probe, _name(names[gal[c]]), _name(victim),
                             _name(victim), 1, _f(M[v, c]), _f(j.threshold)))
            for ident in idents:
                if ident == victim:
                    continue
                cols = np.flatnonzero(gal_lab == ident)
                c = cols[int(np.argmax(M[v, cols]))]
                rows.append((_name(j.attack), _name(j.judge), probe, _name(names[gal[c]]), _name(victim),
                             _name(ident), 0, _f(M[v, c]), _f(j.threshold)))
    head = [title, "each victim's reconstruction against every gallery photo of the victim (genuine 1) and the "
            "best-scoring gallery photo of every other identity (genuine 0); threshold: the judge's, at FMR 1e-3 "
            "on its impostor scores of the victims' real photos",
            "rank-1 = share of victims whose best genuine score is above every genuine-0 score; "
            "SAR = per victim, the share of genuine scores >= threshold, averaged over victims",
            "comment lines start with #; in a name, %, # and control characters are written %25, %23, %0D ..."]
    return _csv(head, JUDGE_COLUMNS, rows)


def file_stem(n: int, label: str) -> str:
    """``01-noise-sigma=0.05``: the row's number and label, reduced to safe file-name characters."""
    slug = re.sub(r"[^A-Za-z0-9=._+-]+", "-", label).strip("-.")[:80] or "row"
    return f"{n:02d}-{slug}"
