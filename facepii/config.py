"""The one configuration of an evaluation: read by the CLI, the Python API and the gate's ``[evaluate]``.

:class:`EvaluateConfig` nests three parts (data, defenses, privacy). Every
option has ONE name, the CLI's (``--max-identities`` is ``max_identities``),
used by :meth:`EvaluateConfig.from_options` for the CLI and the gate's TOML
table alike. :meth:`EvaluateConfig.validate` checks every choice and range up
front, whether or not that part will run (``--no-privacy --budget huge`` is an
error), so a long run never dies late on a typo.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attacks import oracle_registry
from attacks import registry as attack_registry
from attacks.facemodel import BUDGETS
from attacks.prior import KINDS as PRIOR_KINDS
from facepii.datasets import LOADERS, dataset_root
from facepii.encoders import spec_list
from facepii.errors import ConfigError, ParameterError
from facepii.executor import check as check_executor
from facepii.option_text import defense_grid, judge_specs
from facepii.threat import KEY_SCENARIOS, KNOWLEDGE

DEVICES = ("cpu", "cuda")


@dataclass
class DataConfig:
    """Which faces, which model, which cache."""

    dataset: str | None = None
    encoder: str | None = None  # None: sface, or the precomputed embeddings of the dataset
    max_identities: int | None = None
    min_images: int = 2
    cache_dir: str | None = None
    no_cache: bool = False
    max_memory: int | None = None  # bytes for exact impostor scores (default 4 GB); beyond, a sample
    executor: str = "local"        # local | dask | dask:ADDRESS
    scores: int = 100_000          # impostor pairs per row in the score files; -1 = all, 0 = no score files
    threads: int | None = None     # torch threads behind the figures (default: this machine's cores)


@dataclass
class DefenseConfig:
    """The protections: specs (``a+b`` chains), parameter sweeps and epsilon-calibrated noise rows."""

    defenses: list[str] = field(default_factory=lambda: ["none"])
    params: dict[str, list[Any]] = field(default_factory=dict)
    epsilons: list[float] = field(default_factory=list)


@dataclass
class PrivacyConfig:
    """The attacker and the judge; no attacks = utility only."""

    attacks: list[str] = field(default_factory=list)
    judge: str | None = None
    knowledge: str = "white"
    surrogate: str | None = None   # black box: public face models of the attacker's own (onnx:PATH,...)
    key: str = "both"
    budget: str = "standard"
    victims: float | int | None = None
    max_aux: int = 1000
    device: str = "cpu"
    oracle: str = "none"
    oracle_queries: int | None = None
    attacker_data: str | None = None  # the attacker's own photos (a dataset spec) instead of the auxiliary split
    prior: str = "eigenfaces"      # the attacker's face prior: eigenfaces, detail, or a file (facepii prior train)
    templates_per_victim: list[int] = field(default_factory=lambda: [1])  # K stolen templates per victim;
    #                                 the first K is the headline, every K is reported (--templates-per-victim 1,2,4)


MAX_TEMPLATES_PER_VICTIM = 16


@dataclass(frozen=True)
class Specs:
    """The options that name models and rows, parsed once (:attr:`EvaluateConfig.specs`): what every stage
    reads instead of parsing the option text again."""

    targets: tuple[str, ...]              # --encoder's entries (empty: sface, or an embeddings file's own)
    judges: tuple[str | None, ...]        # --judge's entries, the headline first ((None,): the default judge)
    surrogates: tuple[str, ...]           # --surrogate's entries
    grid: tuple[tuple[str, dict[str, Any]], ...]  # every row's (defense spec, parameters), unprotected first


@dataclass
class EvaluateConfig:
    """Everything ``facepii evaluate`` takes."""

    data: DataConfig = field(default_factory=DataConfig)
    protect: DefenseConfig = field(default_factory=DefenseConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    seed: int = 0
    bootstrap: int = 1000

    # ---- one set of option names ---------------------------------------------------
    @classmethod
    def option_types(cls) -> dict[str, tuple[str | None, Any]]:
        """option name -> (section attribute or None, annotation text)."""
        out: dict[str, tuple[str | None, Any]] = {}
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING
                                        else None):
                for g in dataclasses.fields(f.default_factory):
                    out[g.name] = (f.name, g.type)
            else:
                out[f.name] = (None, f.type)
        return out

    @classmethod
    def from_options(cls, where: str = "EvaluateConfig", **options: Any) -> EvaluateConfig:
        """A config from flat option names (the CLI's, and the gate's ``[evaluate]`` keys)."""
        types = cls.option_types()
        given: dict[str | None, dict[str, Any]] = {None: {}}
        for name, value in options.items():
            if name not in types:
                raise ConfigError(f"{where} has no key '{name}'; keys: {', '.join(sorted(types))}.")
            section, annotation = types[name]
            given.setdefault(section, {})[name] = _coerce(name, value, str(annotation), where)
        sections = {f.name: f.default_factory(**given.get(f.name, {})) for f in dataclasses.fields(cls)
                    if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING
                                                else None)}  # DataConfig(...), DefenseConfig(...), PrivacyConfig(...)
        return cls(**sections, **given[None])

    def options(self) -> dict[str, Any]:
        """The flat options (what a report's ``settings`` records)."""
        out: dict[str, Any] = {}
        for name, (section, _) in self.option_types().items():
            out[name] = getattr(getattr(self, section) if section else self, name)
        return out

    # ---- validation before any work --------------------------------------------------
    @functools.cached_property
    def specs(self) -> Specs:
        """The model and row options parsed (once: :meth:`validate` does it; change no option afterwards)."""
        p = self.privacy
        return Specs(tuple(spec_list(self.data.encoder, "--encoder")), tuple(judge_specs(p.judge)),
                     tuple(spec_list(p.surrogate, "--surrogate")), tuple(self.grid()))

    def resolved(self, threads: int) -> EvaluateConfig:
        """A validated copy whose thread count is settled (``threads`` where none was given), so that the report
        records the number the figures used; this config is not changed."""
        new = copy.deepcopy(self)
        new.__dict__.pop("specs", None)  # parsed again from the copy's own options
        if new.data.threads is None:
            new.data.threads = threads
        return new.validate()

    def validate(self) -> EvaluateConfig:
        p, d = self.privacy, self.data
        self.__dict__.pop("specs", None)  # options may have changed since an earlier validation
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2 ** 32:
            raise ParameterError(f"--seed must be an integer in 0..{2 ** 32 - 1}, got {self.seed!r}.")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 100:
            raise ParameterError(f"--bootstrap must be an integer >= 100, got {self.bootstrap!r}.")
        if d.min_images < 1:
            raise ParameterError(f"--min-images must be >= 1, got {d.min_images}.")
        if d.max_memory is not None and (isinstance(d.max_memory, bool) or not isinstance(d.max_memory, int)
                                         or not 1 << 26 <= d.max_memory <= 1 << 50):
            raise ParameterError(f"--max-memory must be between 64MB and 1PB, got {d.max_memory!r}.")
        check_executor(d.executor)
        if d.threads is not None and (isinstance(d.threads, bool) or not isinstance(d.threads, int)
                                      or not 1 <= d.threads <= 1024):
            raise ParameterError(f"--threads must be a whole number 1..1024, got {d.threads!r}.")
        if isinstance(d.scores, bool) or not isinstance(d.scores, int) or d.scores < -1:
            raise ParameterError(f"--scores must be all, none or a number of impostor pairs, got {d.scores!r}.")
        if d.max_identities is not None and d.max_identities < 2:
            raise ParameterError(f"--max-identities must be >= 2, got {d.max_identities}.")
        for e in self.protect.epsilons:
            if not (isinstance(e, (int, float)) and math.isfinite(e) and e > 0):
                raise ParameterError(f"--epsilon {e}: must be a finite number > 0.")
        for a in p.attacks:
            attack_registry.get(a)
        if len(set(p.attacks)) != len(p.attacks):
            raise ParameterError(f"--attack lists an attack twice: {','.join(p.attacks)}.")
        if p.knowledge not in KNOWLEDGE:
            raise ParameterError(f"--knowledge must be white or black, got {p.knowledge!r}.")
        if p.key not in KEY_SCENARIOS:
            raise ParameterError(f"--key must be secret, disclosed or both, got {p.key!r}.")
        if p.budget not in BUDGETS:
            raise ParameterError(f"--budget must be one of {', '.join(BUDGETS)}, got {p.budget!r}.")
        if p.oracle != "none" and (not isinstance(p.oracle, str) or p.oracle not in oracle_registry):
            names = ["none", *oracle_registry.names()]
            raise ParameterError(f"--oracle must be {', '.join(names[:-1])} or {names[-1]} (`facepii oracles` lists "
                                 f"them), got {p.oracle!r}.")
        if not isinstance(p.prior, str) or not p.prior:
            raise ParameterError(f"--prior must be detail, eigenfaces or a prior file, got {p.prior!r}.")
        if p.prior not in PRIOR_KINDS and not Path(p.prior).is_file():
            raise ParameterError(f"--prior {p.prior}: neither detail nor eigenfaces, and no such file (a prior file "
                                 "is written by `facepii prior train`).")
        if p.attacker_data is not None:
            check_attacker_data(p.attacker_data, d.dataset)
        q = p.oracle_queries
        if q is not None and (isinstance(q, bool) or not isinstance(q, int) or not 10 <= q <= 100_000):
            raise ParameterError(f"--oracle-queries must be an integer in 10..100000, got {q!r}.")
        if q is not None and p.oracle == "none":
            raise ParameterError("--oracle-queries without --oracle: say which oracle (`facepii oracles`), or drop it.")
        if not p.attacks:  # utility only: an option of the attacks would be silently ignored
            for name, given in (("--oracle", p.oracle != "none"), ("--judge", p.judge is not None),
                                ("--surrogate", p.surrogate is not None), ("--prior", p.prior != "eigenfaces"),
                                ("--attacker-data", p.attacker_data is not None)):
                if given:
                    raise ParameterError(f"{name} has no effect without attacks (--no-privacy, or attacks = [] in a "
                                         "gate config): drop one of the two.")
        if p.device not in DEVICES:
            raise ParameterError(f"--device must be cpu or cuda, got {p.device!r}.")
        if p.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ParameterError("--device cuda: no CUDA device is available to torch here; use --device cpu.")
        if p.victims is not None:
            v = p.victims
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    (isinstance(v, float) and 0 < v < 1) or (v >= 2 and v == int(v))):
                raise ParameterError(f"--victims {v!r}: give a count >= 2 or a fraction between 0 and 1.")
        ks = p.templates_per_victim
        if not ks or len(set(ks)) != len(ks) or not all(1 <= k <= MAX_TEMPLATES_PER_VICTIM for k in ks):
            raise ParameterError(f"--templates-per-victim {','.join(map(str, ks)) or '(empty)'}: give distinct whole "
                                 f"numbers 1..{MAX_TEMPLATES_PER_VICTIM}, e.g. 1,2,4 (the first is the headline).")
        if ks != [1] and not p.attacks:
            raise ParameterError("--templates-per-victim has no effect without attacks (--no-privacy): drop one "
                                 "of the two.")
        m = p.max_aux
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise ParameterError(f"--max-aux must be an integer >= 2 (auxiliary identities), got {m!r}.")
        specs = self.specs  # empty or repeated entries, unknown defenses and parameters fail here
        if specs.surrogates and p.knowledge != "black":
            raise ParameterError("--surrogate: surrogates are the tools of a black-box attacker (--knowledge black); "
                                 "a white-box attacker differentiates the target itself.")
        return self

    def grid(self) -> list[tuple[str, dict[str, Any]]]:
        """(spec, params) of every row: the unprotected row first, then the sweeps, then --epsilon rows."""
        specs = [s for s in self.protect.defenses if s != "none"]
        rows = [("none", {})] + defense_grid(specs, self.protect.params)
        return rows + [("noise", {"epsilon": float(e)}) for e in self.protect.epsilons]


def check_attacker_data(spec: Any, dataset: str | None) -> None:
    """--attacker-data: a dataset spec of photos (not embeddings), not the evaluated dataset itself."""
    kind = spec.partition(":")[0] if isinstance(spec, str) else None
    if kind is None or kind not in LOADERS or (kind != "lfw" and not spec.partition(":")[2]):
        raise ParameterError(f"--attacker-data must be a dataset spec of photos (celeba:DIR, folder:DIR, lfw:DIR), "
                             f"got {spec!r}.")
    if kind == "embeddings":
        raise ParameterError(f"--attacker-data {spec}: the attacks learn from photos; an embeddings file holds none.")
    mine, theirs = dataset_root(spec), dataset_root(dataset)
    if mine is not None and not mine.is_dir():  # said now, not after the evaluated dataset's photos are embedded
        raise ParameterError(f"--attacker-data {spec}: no such folder (give the folder of the attacker's photos).")
    if spec == dataset or (mine is not None and mine == theirs):
        raise ParameterError(f"--attacker-data {spec}: the evaluated dataset itself; leave the option out and the "
                             "attacker trains on its identities that are not victims (the auxiliary split).")


def _coerce(name: str, value: Any, annotation: str, where: str) -> Any:
    """Check an option's value against its annotation; lists may come as comma-separated text."""
    def bad(want: str):
        return ConfigError(f"{where} {name} must be {want}, got {type(value).__name__} ({value!r}).")

    if annotation.startswith("list"):
        if isinstance(value, str):
            value = [x.strip() for x in value.split(",") if x.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        value = list(value)
        if "int" in annotation:
            try:
                value = [int(x) if isinstance(x, str) else x for x in value]
            except ValueError:
                raise bad("a list of whole numbers") from None
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in value):
                raise bad("a list of whole numbers")
            return value
        if "float" in annotation:
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
                raise bad("a list of numbers")
            return [float(x) for x in value]
        if not all(isinstance(x, str) for x in value):
            raise bad("a list of names")
        return value
    if annotation.startswith("dict"):
        if not isinstance(value, dict):
            raise bad("a table")
        out = {}
        for k, v in value.items():
            vals = v if isinstance(v, list) else [v]
            if not all(isinstance(x, (int, float, str, bool)) for x in vals):
                raise ConfigError(f"{where} params.{k} must be a value or a list of values.")
            out[str(k)] = vals
        return out
    if value is None and "None" in annotation:
        return None
    if annotation == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if annotation.startswith("int") and "float" not in annotation:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if "float" in annotation:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return value
    if not isinstance(value, str):
        raise bad("text")
    return value
